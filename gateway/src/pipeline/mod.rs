//! The request pipeline, in the order a request travels:
//!
//! ```text
//! head checks (URI length, header size/count) → route (host, prefix, method)
//!   → identify (bearer token or browser session; route requirements; failed credentials from
//!     a client address the engine marks for deny are denied instead)
//!   → trust (risk from the engine + identity assurance → allow, step up or deny) → body limit
//!   → pick endpoint (balance, passive health) → forward (hop-by-hop, X-Forwarded-*, request id)
//!   → upstream exchange (timeout) → response (hop-by-hop, request id, upgrade bridge) → observe
//! ```
//!
//! [`handle`] takes one config [`Snapshot`](crate::config::Snapshot) at the start and keeps it to
//! the end. Every outcome, including errors answered by [`rescue`](crate::error::rescue), flows
//! through the [`Observer`](observe::Observer) carried inside the response body.

pub mod body;
pub mod compress;
pub mod cors;
pub mod forward;
pub mod maps;
pub mod observe;
pub mod ratelimit;
pub mod route;
pub mod trust;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;

use crate::config::Snapshot;
use crate::conn::ConnInfo;
use crate::error::{is_caused_by, rescue, ProxyError};
use crate::identity::provider::AuthError;
use crate::telemetry::trace;
use crate::telemetry::ErrorLabels;
use crate::upstream::client::{SendError, Sent};
use crate::upstream::{Endpoint, Failure, RetryReason, Unavailable};
use crate::Shared;
use baseline_engine::{AuthOutcome, Decision};
use body::{Body, BodyLimitExceeded, ClientBody, Limited, Observed, ProxyBody};
use observe::Observer;
use opentelemetry::trace::{Span as _, SpanKind};
use opentelemetry::KeyValue;
use route::RouteMatch;

/// What every answer on the request path carries: its body with the request's observer.
pub type Answer = Response<Observed<ProxyBody>>;

/// Handles one request from a client connection. Never fails: errors become problem answers.
/// (The `Result` is what hyper's service wants; returning it here spares wrapping this future,
/// which would copy it once more per request.) The answer's `X-Request-Id` is put among its
/// fields, unless `writes_id`: the caller writes it from the body's observer itself (the own
/// HTTP/1.1 path, which spares the map that insertion).
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
    writes_id: bool,
) -> Result<Answer, Infallible> {
    let snap = shared.snapshot.load_full();
    let trusted = forward::is_trusted(&snap.config.trusted_proxies, conn.peer.ip());
    let request_id = forward::request_id(req.headers(), trusted);
    let trace = snap.tracing.start(req.headers(), trusted);
    let mut obs = Observer::new(
        conn.clone(),
        request_id,
        &req,
        snap.unrouted.clone(),
        shared.tap.clone(),
        trace,
    );
    // Kept for the CORS headers of the answer (browsers send it on cross-origin requests).
    let origin = snap
        .cors_enabled
        .then(|| req.headers().get(header::ORIGIN).cloned())
        .flatten();
    // Read only when some route compresses: the method and whether gzip is accepted.
    let gzip = (snap.compress_enabled && compress::accepts_gzip(req.headers())).then(|| req.method().clone());
    let result = proxy(&shared, &snap, &conn, &mut obs, req, trusted).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            let (status, reason, side, ..) = err.describe();
            obs.error = Some(reason);
            shared
                .metrics
                .request_errors
                .get_or_create(&ErrorLabels {
                    side: side.as_str(),
                    reason,
                })
                .inc();
            let rid = obs.request_id.to_str().unwrap_or("");
            if status.is_server_error() {
                let route = obs.route.as_ref().map(|r| &*r.name).unwrap_or("none");
                tracing::warn!(request_id = rid, route, error = %err, "request failed");
            } else {
                tracing::debug!(request_id = rid, error = %err, "request refused");
            }
            rescue(&err, rid).map(ProxyBody::local)
        }
    };
    if let Some(route) = obs.route.as_ref().filter(|r| !r.response_headers.is_empty()) {
        route.response_headers.apply(resp.headers_mut());
    }
    if let (Some(o), Some(c)) = (&origin, obs.route.as_ref().and_then(|r| r.cors.as_ref())) {
        c.decorate(o, resp.headers_mut());
    }
    if let (Some(method), Some(c)) = (&gzip, obs.route.as_ref().and_then(|r| r.compress.as_ref())) {
        resp = c.apply(method, resp);
    }
    let mut answer = finish(resp, obs, writes_id);
    if let Some(v) = &conn.alt_svc {
        answer.headers_mut().insert(header::ALT_SVC, v.clone());
    }
    Ok(answer)
}

fn finish(resp: Response<ProxyBody>, mut obs: Observer, writes_id: bool) -> Answer {
    let (mut parts, body) = resp.into_parts();
    obs.status = parts.status.as_u16();
    // Otherwise the caller writes it, in place of any among the fields (from the upstream).
    if !writes_id {
        parts.headers.insert(&forward::X_REQUEST_ID, obs.request_id.clone());
    }
    Response::from_parts(parts, Observed::new(body, obs))
}

/// Size of the request head as it would be on the wire in HTTP/1.1, and its field count.
fn head_size(req: &Request<ClientBody>) -> (usize, usize) {
    let mut size = req.method().as_str().len() + req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(1) + 12;
    for (k, v) in req.headers() {
        size += k.as_str().len() + v.len() + 4;
    }
    (size, req.headers().len())
}

/// A request that came in 0-RTT early data: forwarded with `Early-Data: 1` when its method is
/// safe and its route takes early data; otherwise refused with 425, to be sent again after the
/// handshake (RFC 8470 §5.2).
fn early_data(
    method: &http::Method,
    headers: &mut http::HeaderMap,
    route: &str,
    allowed: bool,
) -> Result<(), ProxyError> {
    let safe = matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    if !(safe && allowed) {
        return Err(ProxyError::TooEarly {
            method: method.to_string(),
            route: route.to_string(),
        });
    }
    headers.insert(
        http::HeaderName::from_static("early-data"),
        HeaderValue::from_static("1"),
    );
    Ok(())
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1), if there is exactly one.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// Holds the caller to the route's requirements, in a `decision` span when traced.
fn decide(
    obs: &mut Observer,
    claims: &crate::identity::jwt::Claims,
    requirements: &crate::config::Requirements,
    now: u64,
) -> Result<(), crate::identity::Refusal> {
    let mut span = obs.trace.child("decision", SpanKind::Internal);
    let result = crate::identity::check(claims, requirements, now);
    if let Some(s) = &mut span {
        let (decision, reason) = match &result {
            Ok(()) => ("allow", ""),
            Err(r @ crate::identity::Refusal::StepUp { .. }) => ("step_up", r.code()),
            Err(r) => ("deny", r.code()),
        };
        s.set_attributes([
            KeyValue::new("gateway.decision", decision),
            KeyValue::new("gateway.reasons", reason),
        ]);
    }
    result
}

/// Records a refusal by identity checking in the request's observation.
fn refuse(obs: &mut Observer, auth: AuthOutcome, reason: &'static str) {
    obs.auth = auth;
    obs.decision = Decision::Deny { reasons: vec![reason] };
}

/// Records an authenticated caller refused by the route's requirements.
fn refused(obs: &mut Observer, refusal: &crate::identity::Refusal) {
    if let crate::identity::Refusal::StepUp { .. } = refusal {
        obs.auth = AuthOutcome::StepUp;
        obs.decision = Decision::StepUp {
            reasons: vec![refusal.code()],
        };
    } else {
        obs.auth = AuthOutcome::Refused;
        obs.decision = Decision::Deny {
            reasons: vec![refusal.code()],
        };
    }
}

/// A request whose credentials failed: denied instead when its client address alone is risky
/// enough (credential stuffing, enumeration), else refused with `err`.
async fn screened(
    shared: &Shared,
    obs: &mut Observer,
    route: &route::Route,
    stale_ms: u64,
    err: ProxyError,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Some(policy) = &route.trust {
        if let Some(a) = trust::screen(shared, stale_ms, policy, obs.conn.peer.ip()) {
            if let Some(resp) = enforce(shared, obs, route, policy, a, None).await? {
                return Ok(resp);
            }
        }
    }
    Err(err)
}

/// What a browser needs to be sent to step up.
struct BrowserStepUp<'a> {
    /// The request's config snapshot.
    snap: &'a Snapshot,
    provider: &'a Arc<crate::identity::provider::Provider>,
    origin: crate::identity::login::Origin,
    return_to: String,
    key: crate::identity::session::SessionKey,
}

/// What a deny revokes.
struct Revoke {
    session: Option<crate::identity::session::SessionKey>,
    subject: Option<Arc<str>>,
}

/// Applies a trust assessment: records it (observation, metrics, span, log) and, unless the
/// route is in shadow mode, answers a step-up or deny. `Ok(None)`: go on.
async fn enforce(
    shared: &Shared,
    obs: &mut Observer,
    route: &route::Route,
    policy: &crate::config::TrustConfig,
    a: trust::Assessment,
    caller: Option<(Revoke, Option<BrowserStepUp<'_>>)>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let decision = a.verdict.name();
    obs.risk = Some(a.score);
    route.metrics.decided(decision, policy.shadow, a.score);
    if let Some(mut span) = obs.trace.child("trust", SpanKind::Internal) {
        span.set_attributes([
            KeyValue::new("gateway.risk", f64::from(a.score)),
            KeyValue::new("gateway.decision", decision),
            KeyValue::new("gateway.reasons", a.signals().join(",")),
            KeyValue::new("gateway.trust.mode", if policy.shadow { "shadow" } else { "enforce" }),
        ]);
    }
    if a.verdict == trust::Verdict::Allow {
        return Ok(None);
    }
    let signals = a.signals();
    route.metrics.reasons(decision, &signals);
    let rid = obs.request_id.to_str().unwrap_or("").to_string();
    let explained = a.explain();
    let subject = obs.subject.as_deref().unwrap_or("");
    let client = obs.conn.peer.ip();
    if policy.shadow {
        obs.shadow = Some(decision);
        tracing::info!(request_id = %rid, route = %route.name, subject, %client, decision, mode = "shadow", risk = a.score, reasons = %explained, "trust decision (not enforced)");
        return Ok(None);
    }
    tracing::warn!(request_id = %rid, route = %route.name, subject, %client, decision, risk = a.score, reasons = %explained, "trust decision");
    let (revoke, browser) = caller.unzip();
    if a.verdict == trust::Verdict::Deny {
        obs.decision = Decision::Deny { reasons: signals };
        let revoke = revoke.unwrap_or(Revoke {
            session: None,
            subject: None,
        });
        if let Some(key) = revoke.session {
            let n = shared
                .sessions
                .revoke(&shared.metrics, crate::identity::session::Selector::Key(key), "revoked")
                .await;
            if n > 0 {
                count_revocation(shared, "session");
            }
        } else if let Some(subject) = &revoke.subject {
            shared.revocations.revoke(subject, crate::unix_now() as u64);
            count_revocation(shared, "subject");
            tracing::warn!(request_id = %rid, subject = %subject, "subject's tokens revoked on risk");
        }
        return Err(ProxyError::RiskDenied {
            score: a.score,
            explained,
        });
    }
    obs.decision = Decision::StepUp { reasons: signals };
    let refusal = crate::identity::Refusal::StepUp {
        acr_values: (!policy.step_up.acr_values.is_empty()).then(|| policy.step_up.acr_values.join(" ")),
        max_age: policy.step_up.max_age.map(|m| m.as_secs()),
        description: crate::identity::STEP_UP_RISK,
    };
    if let Some(b) = browser.flatten() {
        let step_up = Some((&policy.step_up).into());
        return crate::identity::login::begin(
            shared,
            b.snap,
            b.provider,
            &b.origin,
            &b.return_to,
            step_up,
            Some(b.key),
        )
        .map(Some);
    }
    crate::identity::login::count_step_up(&shared.metrics, "bearer", "issued");
    Err(ProxyError::Refused { refusal })
}

fn count_revocation(shared: &Shared, kind: &'static str) {
    let _ = shared
        .metrics
        .trust_revocations
        .get_or_create(&crate::telemetry::RevocationLabels { kind })
        .inc();
}

/// Where the browser is: the scheme it used (HTTPS, or what a trusted proxy says) and the host.
fn origin(headers: &http::HeaderMap, conn: &ConnInfo, trusted: bool, host: &str) -> crate::identity::login::Origin {
    let forwarded_https = trusted
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    crate::identity::login::Origin {
        scheme: if conn.tls || forwarded_https { "https" } else { "http" },
        host: host.to_string(),
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

async fn proxy(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    obs: &mut Observer,
    mut req: Request<ClientBody>,
    trusted: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    // --- head checks
    let limits = &snap.config.limits;
    let uri_len = req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(0);
    if uri_len > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong {
            len: uri_len,
            limit: limits.max_uri_bytes,
        });
    }
    let (size, count) = head_size(&req);
    if size > limits.max_header_bytes || count > limits.max_headers {
        return Err(ProxyError::HeadTooLarge { size, count });
    }
    // The host as sent: the HTTP/2 authority, else the Host header.
    let host_value = match req.uri().authority() {
        Some(a) => Some(HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest {
            reason: "invalid authority",
        })?),
        None => match req.headers().get(header::HOST) {
            Some(h) => Some(h.clone()),
            None if req.version() == http::Version::HTTP_11 => {
                return Err(ProxyError::BadRequest {
                    reason: "missing host header",
                })
            }
            None => None,
        },
    };
    let host_raw = match &host_value {
        Some(h) => h.to_str().map_err(|_| ProxyError::BadRequest {
            reason: "host header is not valid text",
        })?,
        None => "",
    };
    let host = route::normalize_host(host_raw);
    obs.host = host_value.clone();

    // --- a plain listener that sends clients to HTTPS (not when a trusted proxy took HTTPS)
    if let Some((port, counter)) = snap.https_redirect(&conn.listener) {
        if !forward::came_over_https(req.headers(), trusted) {
            if host.is_empty() {
                return Err(ProxyError::BadRequest {
                    reason: "missing host header",
                });
            }
            counter.inc();
            return Ok(forward::https_redirect(&host, port, req.uri()));
        }
    }

    // --- the gateway's own paths: sign-in, callback, logout, back-channel logout
    if snap.login_enabled && snap.config.sessions.is_own_path(req.uri().path()) {
        let origin = origin(req.headers(), conn, trusted, host_raw);
        // This and the other identity, session and refusal steps below are boxed: their states
        // (fetching signing keys, a session store's round trip) would otherwise make every
        // request's future larger, and it is moved (copied whole) several times before it runs.
        return Box::pin(crate::identity::login::serve(shared, snap, conn, &origin, req)).await;
    }

    // --- CORS preflight: routed by the method it asks for, answered here when that route has
    // a `cors` policy (before rate limits and identity: browsers send it without credentials).
    if let Some(method) = cors::preflight_method(&req) {
        if let RouteMatch::Found(r) = snap.router.find(&host, req.uri().path(), &method, req.headers()) {
            if let Some(c) = r.cors.clone() {
                obs.route = Some(r.clone());
                return c.preflight(req.headers(), &method);
            }
        }
    }

    // --- route
    let route = match snap.router.find(&host, req.uri().path(), req.method(), req.headers()) {
        RouteMatch::Found(r) => r.clone(),
        RouteMatch::MethodNotAllowed(allow) => return Err(ProxyError::MethodNotAllowed { allow }),
        RouteMatch::NotFound => {
            return Err(ProxyError::NoRoute {
                host: host.into_owned(),
                path: req.uri().path().to_string(),
            })
        }
    };
    obs.route = Some(route.clone());
    // --- 0-RTT early data (RFC 8470): only safe methods on routes that take it, marked.
    if req.extensions().get::<crate::listen::quic::EarlyData>().is_some() {
        let method = req.method().clone();
        early_data(&method, req.headers_mut(), &route.name, route.early_data)?;
    }
    let stale_ms = snap.config.engine.stale_after.as_millis() as u64;
    let limit = |rl: &ratelimit::RateLimit, subject: Option<&Arc<str>>| {
        let client = forward::client_ip(req.headers(), conn.peer.ip(), trusted);
        rl.check(&rl.key(client, subject))
            .map_err(|retry_after| ProxyError::RateLimited { retry_after })
    };

    // --- client address rules
    if let Some(rules) = &route.clients {
        let client = forward::client_ip(req.headers(), conn.peer.ip(), trusted);
        if !rules.admits(client) {
            return Err(ProxyError::ClientNotAllowed);
        }
    }

    // --- rate limit by client or route (before identity: bad credentials count too)
    if let Some(rl) = route.rate_limit.as_ref().filter(|rl| rl.before_identity()) {
        limit(rl, None)?;
    }

    // --- a route that answers by itself (redirect, fixed answer)
    if let Some(d) = &route.direct {
        return Ok(forward::direct_answer(d, &route.prefix, req.uri()));
    }

    // --- client certificate (mutual TLS), when the route requires one
    if route.client_certificate && conn.client_cert.is_none() {
        return Err(ProxyError::ClientCertificateRequired);
    }

    // --- identify
    let identity_span = (route.bearer.is_some() || route.login.is_some())
        .then(|| obs.trace.child("identity", SpanKind::Internal))
        .flatten();
    // Unix seconds at the head's arrival: token lifetimes and session ages are judged by it.
    let now = obs.unix_ms / 1000;
    let mut verified: Option<(Arc<crate::identity::jwt::Claims>, [u8; 32])> = None;
    let token = route.bearer.as_ref().and_then(|_| bearer_token(req.headers()));
    if let (Some(provider), Some(token)) = (&route.bearer, token) {
        match Box::pin(provider.authenticate(token)).await {
            Ok((claims, digest)) => {
                obs.subject = claims.subject.as_deref().map(Arc::from);
                obs.auth = AuthOutcome::Bearer;
                if shared.revocations.is_revoked(&claims) {
                    provider.count("invalid", "revoked");
                    refuse(obs, AuthOutcome::Invalid, "revoked");
                    let err = ProxyError::InvalidToken {
                        source: crate::identity::jwt::JwtError::Claim("revoked"),
                    };
                    return Box::pin(screened(shared, obs, &route, stale_ms, err)).await;
                }
                if let Err(refusal) = decide(obs, &claims, &route.requirements, now) {
                    provider.count("denied", refusal.reason());
                    if matches!(refusal, crate::identity::Refusal::StepUp { .. }) {
                        crate::identity::login::count_step_up(&shared.metrics, "bearer", "issued");
                    }
                    refused(obs, &refusal);
                    return Err(ProxyError::Refused { refusal });
                }
                verified = Some((claims, digest));
            }
            Err(AuthError::Unavailable(provider)) => {
                refuse(obs, AuthOutcome::Unavailable, "identity_unavailable");
                return Err(ProxyError::IdentityUnavailable { provider });
            }
            Err(AuthError::Invalid(source)) => {
                refuse(obs, AuthOutcome::Invalid, source.reason());
                let err = ProxyError::InvalidToken { source };
                return Box::pin(screened(shared, obs, &route, stale_ms, err)).await;
            }
        }
    } else if let Some(provider) = &route.login {
        let navigable = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let return_to = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let session = Box::pin(shared.sessions.current(shared, snap, req.headers()))
            .await?
            .filter(|(_, s)| s.provider == provider.config.name);
        let Some((key, session)) = session else {
            refuse(obs, AuthOutcome::Missing, "login_required");
            if !navigable {
                return Box::pin(screened(shared, obs, &route, stale_ms, ProxyError::LoginRequired)).await;
            }
            let origin = origin(req.headers(), conn, trusted, host_raw);
            return crate::identity::login::begin(shared, snap, provider, &origin, &return_to, None, None);
        };
        obs.subject = Some(Arc::from(session.subject.as_str()));
        obs.session = Some(crate::identity::session::handle(&key));
        obs.auth = AuthOutcome::Session;
        if let Err(refusal) = decide(obs, &session.claims, &route.requirements, now) {
            refused(obs, &refusal);
            if matches!(refusal, crate::identity::Refusal::StepUp { .. }) && navigable {
                let origin = origin(req.headers(), conn, trusted, host_raw);
                let step_up = Some((&route.requirements).into());
                return crate::identity::login::begin(shared, snap, provider, &origin, &return_to, step_up, Some(key));
            }
            return Err(ProxyError::Refused { refusal });
        }
        verified = Some((session.claims.clone(), key));
    } else if let Some(provider) = &route.bearer {
        provider.count("missing", "no_token");
        refuse(obs, AuthOutcome::Missing, "missing_token");
        return Box::pin(screened(shared, obs, &route, stale_ms, ProxyError::MissingToken)).await;
    }
    if let Some(mut span) = identity_span {
        span.set_attribute(KeyValue::new("gateway.auth", obs.auth.name()));
    }

    // --- rate limit by subject
    if let Some(rl) = route.rate_limit.as_ref().filter(|rl| !rl.before_identity()) {
        limit(rl, obs.subject.as_ref())?;
    }

    // --- trust
    if let Some(policy) = &route.trust {
        let ctx = trust::Context {
            session: obs.session,
            subject: obs.subject.as_ref(),
            client: conn.peer.ip(),
            claims: verified.as_ref().map(|(c, _)| &**c),
            can_step_up: route.bearer.is_some() || route.login.is_some(),
        };
        let assessment = match trust::assess(shared, stale_ms, &route, policy, &ctx, now) {
            Ok(a) => a,
            Err(trust::Unavailable) => {
                obs.decision = Decision::Deny {
                    reasons: vec!["risk_unavailable"],
                };
                return Err(ProxyError::RiskUnavailable);
            }
        };
        let browser = match (&route.login, &verified) {
            (Some(provider), Some((_, key)))
                if obs.session.is_some() && matches!(*req.method(), http::Method::GET | http::Method::HEAD) =>
            {
                Some(BrowserStepUp {
                    snap,
                    provider,
                    origin: origin(req.headers(), conn, trusted, host_raw),
                    return_to: req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                        .to_string(),
                    key: *key,
                })
            }
            _ => None,
        };
        let session_key = obs.session.and(verified.as_ref().map(|(_, k)| *k));
        let revoke = Revoke {
            session: session_key,
            subject: obs.subject.clone(),
        };
        if let Some(early) = Box::pin(enforce(
            shared,
            obs,
            &route,
            policy,
            assessment,
            Some((revoke, browser)),
        ))
        .await?
        {
            return Ok(early);
        }
    }
    if content_length(req.headers()).is_some_and(|n| n > route.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge {
            limit: route.max_body_bytes,
        });
    }

    // --- endpoint
    let picked = route.pick_pool(|by| {
        use std::hash::{Hash, Hasher};
        // A fixed-key hash: the same client or subject draws the same number in every process.
        let mut h = std::hash::DefaultHasher::new();
        match (by, obs.subject.as_deref()) {
            (crate::config::SplitBy::Request, _) => return None,
            (crate::config::SplitBy::Subject, Some(s)) => s.hash(&mut h),
            _ => forward::client_ip(req.headers(), conn.peer.ip(), trusted).hash(&mut h),
        }
        Some(h.finish())
    });
    // Every route has a pool or answers by itself before this point.
    let Some(pool) = picked else {
        return Err(ProxyError::NoRoute {
            host: host.into_owned(),
            path: req.uri().path().to_string(),
        });
    };
    let (mut endpoint, in_flight) = match pool.pick() {
        Ok(picked) => picked,
        Err(why) => {
            pool.record_unavailable(why);
            let pool = pool.name().to_string();
            return Err(match why {
                Unavailable::NoHealthy => ProxyError::NoHealthyEndpoint { pool },
                Unavailable::Overloaded => ProxyError::UpstreamOverloaded { pool },
            });
        }
    };
    obs.endpoint = Some(endpoint.clone());
    obs.in_flight = Some(in_flight);

    // --- forward
    // An HTTP/1.1 upgrade cannot cross HTTP/2: the request goes without it.
    let h2 = pool.h2();
    let upgrade = !h2 && forward::wants_upgrade(req.headers(), req.version());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().cloned();
    // `TE: trailers` is the one hop-by-hop field HTTP/2 carries (gRPC servers look for it).
    let te_trailers = h2 && forward::accepts_trailers(&parts.headers);
    forward::strip_hop_by_hop(&mut parts.headers, upgrade);
    if te_trailers {
        parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // Headers only the gateway writes: identity headers and the assertion (set from the
    // verified token), and X-Forwarded-Client-Cert and X-Forwarded-Prefix unless a trusted
    // proxy sent them. Clients rarely send any: one pass over the names, removals only when
    // one is there.
    let xfcc = &crate::identity::certificate::FORWARDED_CLIENT_CERT;
    let xfp = &forward::X_FORWARDED_PREFIX;
    if parts
        .headers
        .keys()
        .any(|k| snap.owned_headers.contains(k) || (!trusted && (k == xfcc || k == xfp)))
    {
        for n in &snap.owned_headers {
            parts.headers.remove(n);
        }
        if !trusted {
            parts.headers.remove(xfcc);
            parts.headers.remove(xfp);
        }
    }
    let ih = &snap.config.identity_headers;
    if let Some((c, digest)) = &verified {
        crate::identity::set_upstream_headers(&mut parts.headers, ih, c);
        if let (Some(a), Some(signer)) = (&snap.config.assertion, &snap.signer) {
            let now = crate::unix_now() as u64;
            if let Some(v) = signer
                .assertion(digest, c, pool.name(), now)
                .and_then(|t| HeaderValue::from_str(&t).ok())
            {
                parts.headers.insert(&a.header, v);
            }
        }
    }
    if !route.request_headers.is_empty() {
        route.request_headers.apply(&mut parts.headers);
    }
    // Forwarding fields, the request id and the trace context: set apart, and the client's
    // fields of those names taken out (see `forward::Added`).
    let mut added = forward::Added::default();
    forward::add_forwarding(
        &parts.headers,
        &mut added,
        &conn.peer_headers,
        trusted,
        if conn.tls { "https" } else { "http" },
        host_value.as_ref(),
    );
    added.set(&forward::X_REQUEST_ID, Some(obs.request_id.clone()));
    if let Some(c) = conn.client_cert.as_deref() {
        crate::identity::certificate::forward(&mut parts.headers, Some(c), trusted);
    }
    if let Some(h) = host_value {
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(to) = &route.rewrite_prefix {
        forward::add_prefix(&mut parts.headers, &route.prefix, to);
    }
    // Origin-form: the connection already goes to the endpoint.
    parts.uri = match (pq, &route.rewrite_prefix) {
        (pq, Some(to)) => forward::rewrite_prefix(&route.prefix, to, pq.as_ref()),
        (Some(pq), None) => http::Uri::from(pq),
        (None, None) => http::Uri::from_static("/"),
    };
    parts.version = http::Version::HTTP_11;
    let limit = route.max_body_bytes;
    let mut limited = Limited::new(body, limit);
    if !limited.is_end_stream() {
        obs.bytes_in = Some(limited.count_into());
    }
    let mut upstream_span = obs.trace.child("upstream", SpanKind::Client);
    if let Some(s) = &mut upstream_span {
        s.set_attributes([
            KeyValue::new("gateway.pool", pool.name().to_string()),
            // The path as sent upstream (after a route's rewrite_prefix).
            KeyValue::new("url.path", parts.uri.path().to_string()),
            KeyValue::new("network.protocol.version", if h2 { "2" } else { "1.1" }),
        ]);
    }
    for (name, value) in obs.trace.upstream_fields(upstream_span.as_ref()) {
        added.set(name, value);
    }
    added.take_from(&mut parts.headers);
    // A request that can go again as it was (idempotent, no body, no upgrade) may be sent again
    // by the pool's `retry`. An HTTP/1.1 pool hands such a request back after the exchange;
    // hyper's HTTP/2 client keeps it, so there a copy of its head is made first.
    let retry = &pool.config.retry;
    let retryable = retry.attempts > 1 && !upgrade && limited.is_end_stream() && parts.method.is_idempotent();
    let replay = (retryable && h2).then(|| forward::Replay::of(&parts));
    let mut up_req = Request::from_parts(parts, limited);

    // --- exchange: a request no endpoint would take a connection for moves on, unsent, to the
    // next (up to `connect_attempts`); one that can go again is retried after a broken exchange
    // or a listed status (up to `retry.attempts`); all within one `request_timeout`.
    let timeout = route.request_timeout.unwrap_or(pool.config.request_timeout);
    let sent_at = tokio::time::Instant::now();
    let deadline = sent_at + timeout;
    // Endpoints that refused a connection.
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    // Exchanges started (connections that took the request), and tries in all.
    let (mut exchanges, mut attempts) = (1u32, 1usize);
    let mut fresh = false;
    // One timer for every try: they share the deadline.
    let mut expiry = std::pin::pin!(tokio::time::sleep_until(deadline));
    let exchange = loop {
        // The next try: where, the request again, and why (span event, error or status).
        // Idle connections are aged as of the time the request went out (first try) or now.
        let now = if attempts == 1 {
            sent_at
        } else {
            tokio::time::Instant::now()
        };
        // Polled where it stands, not moved into a timeout wrapper (it is large, and each move
        // copies it); the timer is polled only while the exchange waits.
        let sent = {
            let mut sending = std::pin::pin!(pool.send(&endpoint, up_req, &added, fresh, now));
            std::future::poll_fn(|cx| match std::future::Future::poll(sending.as_mut(), cx) {
                std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
                std::task::Poll::Pending => std::future::Future::poll(expiry.as_mut(), cx).map(|()| None),
            })
            .await
        };
        let (next, in_flight, request, event, why) = match sent {
            None => {
                trace::fail(&mut upstream_span, "timeout");
                pool.record(&endpoint, Some(Failure::Timeout));
                break Err(ProxyError::UpstreamTimeout {
                    endpoint: endpoint.base.clone(),
                    timeout,
                });
            }
            Some(Err(SendError::Connect { source, request })) => {
                pool.record(&endpoint, Some(Failure::Connect));
                tried.push(endpoint.clone());
                let Some((next, in_flight)) = pool.retry_connect(&tried) else {
                    trace::fail(&mut upstream_span, "connect");
                    break Err(ProxyError::UpstreamConnect {
                        endpoint: endpoint.base.clone(),
                        source,
                    });
                };
                (next, in_flight, *request, "connect_failed", source.to_string())
            }
            Some(Err(SendError::Exchange {
                source: e,
                request: back,
            })) => {
                if is_caused_by::<BodyLimitExceeded>(&*e) {
                    break Err(ProxyError::BodyTooLarge { limit });
                }
                pool.record(&endpoint, Some(Failure::Protocol));
                let again = (retryable && exchanges < retry.attempts)
                    .then(|| {
                        back.map(|b| *b)
                            .or_else(|| replay.as_ref().map(forward::Replay::request))
                    })
                    .flatten()
                    .and_then(|r| Some((r, pool.retry_exchange(&endpoint, RetryReason::Reset)?)));
                let Some((r, (next, in_flight))) = again else {
                    trace::fail(&mut upstream_span, "protocol");
                    break Err(ProxyError::UpstreamProtocol {
                        endpoint: endpoint.base.clone(),
                        source: e,
                    });
                };
                exchanges += 1;
                (next, in_flight, r, "exchange_failed", e.to_string())
            }
            Some(Ok(Sent {
                response: resp,
                loan,
                request: mut back,
            })) => {
                let status = resp.status();
                // A listed status is retried after a short random pause (up to 25 ms,
                // doubling with each try), when that still ends before the deadline.
                let again = (retryable && exchanges < retry.attempts && retry.statuses.contains(&status))
                    .then(|| back.take().or_else(|| replay.as_ref().map(forward::Replay::request)))
                    .flatten()
                    .and_then(|r| {
                        let pause = std::time::Duration::from_millis(fastrand::u64(..=25u64 << (exchanges - 1).min(4)));
                        (tokio::time::Instant::now() + pause < deadline).then_some(())?;
                        Some((r, pause, pool.retry_exchange(&endpoint, RetryReason::Status)?))
                    });
                let Some((r, pause, (next, in_flight))) = again else {
                    // The head that went out: its map is kept for the next request's.
                    if let Some(sent) = back {
                        maps::give(sent.into_parts().0.headers);
                    }
                    break Ok((resp, loan));
                };
                pool.record(&endpoint, Some(Failure::Status5xx));
                // The answer is dropped, and its connection with it.
                drop((resp, loan));
                tokio::time::sleep(pause).await;
                exchanges += 1;
                (next, in_flight, r, "status_retried", status.as_str().to_string())
            }
        };
        note_retry(
            obs,
            &mut upstream_span,
            pool.name(),
            &endpoint,
            &next,
            event,
            &why,
            attempts,
        );
        attempts += 1;
        fresh = exchanges > 1;
        endpoint = next;
        obs.endpoint = Some(endpoint.clone());
        obs.in_flight = Some(in_flight);
        up_req = request;
    };
    if let Some(s) = &mut upstream_span {
        // The endpoint that answered, or the last one tried.
        s.set_attribute(KeyValue::new("server.address", endpoint.base.clone()));
        if attempts > 1 {
            s.set_attribute(KeyValue::new("gateway.upstream.attempts", attempts as i64));
        }
    }
    let (mut resp, loan) = exchange?;
    obs.upstream = Some(sent_at.elapsed());
    if let Some(mut s) = upstream_span {
        s.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(resp.status().as_u16()),
        ));
        if resp.status().is_server_error() {
            s.set_status(opentelemetry::trace::Status::error("5xx"));
        }
    }
    pool.record(&endpoint, resp.status().is_server_error().then_some(Failure::Status5xx));

    // --- response
    let upgraded = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        conn.state.mark_upgraded();
        if let Some(client_upgrade) = client_upgrade {
            let request_id = obs.request_id.clone();
            tokio::spawn(async move {
                let rid = request_id.to_str().unwrap_or("");
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                            Ok((to_up, to_client)) => {
                                tracing::debug!(request_id = rid, to_up, to_client, "upgraded connection closed")
                            }
                            Err(e) => {
                                tracing::debug!(request_id = rid, error = %e, "upgraded connection ended with an error")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(request_id = rid, error = %e, "protocol upgrade failed"),
                }
            });
        }
    }
    let (mut rparts, rbody) = resp.into_parts();
    forward::strip_hop_by_hop(&mut rparts.headers, upgraded);
    // The connection returns to the pool when the body ends; at once if it has none.
    let loan = if upgraded {
        None
    } else if rbody.is_end_stream() {
        if let Some(l) = loan {
            l.release();
        }
        None
    } else {
        loan
    };
    Ok(Response::from_parts(rparts, ProxyBody::upstream(rbody, loan)))
}

/// Notes that a request goes on from `from` to `to` after try `attempt` failed (`event`: the
/// span event, `connect_failed`, `exchange_failed` or `status_retried`; `why`: the error or
/// the status): an info log line and an event on the upstream span.
#[allow(clippy::too_many_arguments)]
fn note_retry(
    obs: &Observer,
    span: &mut Option<trace::SpanGuard>,
    pool: &str,
    from: &Endpoint,
    to: &Endpoint,
    event: &'static str,
    why: &str,
    attempt: usize,
) {
    tracing::info!(
        request_id = obs.request_id.to_str().unwrap_or(""),
        pool,
        endpoint = %from.base,
        next = %to.base,
        attempt,
        reason = event,
        error = why,
        "upstream try failed; trying again"
    );
    if let Some(s) = span {
        s.add_event(
            event,
            vec![
                KeyValue::new("server.address", from.base.clone()),
                KeyValue::new("error.message", why.to_string()),
            ],
        );
    }
}

/// A plain response used by built-in endpoints.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn early_data_is_forwarded_only_for_safe_methods_on_routes_that_take_it() {
        let mut h = http::HeaderMap::new();
        assert!(super::early_data(&http::Method::GET, &mut h, "r", true).is_ok());
        assert_eq!(h["early-data"], "1");
        for (m, allowed) in [
            (http::Method::POST, true),
            (http::Method::GET, false),
            (http::Method::DELETE, true),
        ] {
            let mut h = http::HeaderMap::new();
            let e = super::early_data(&m, &mut h, "r", allowed).expect_err("refused");
            assert_eq!(e.describe().0, http::StatusCode::TOO_EARLY);
            assert!(h.is_empty());
        }
    }
}
