//! Browser sign-in: the OpenID Connect authorization code flow with PKCE, sessions, step-up,
//! logout and back-channel logout.
//!
//! ```text
//! GET /app (no session) ──302──> provider /authorize?…&state&nonce&code_challenge (S256)
//!       + login cookie (sealed state, 10 min)
//! provider ──302──> /.gateway/callback?code&state
//!       state must match the login cookie and a pending sign-in (used once);
//!       code exchanged with the PKCE verifier; ID token verified (signature, iss, aud, exp,
//!       nonce, azp); for a step-up, the returned acr and auth_time are checked
//!   ──302──> the original path, with the session cookie
//! ```
//!
//! The return path is taken from the original request (or a `return_to` that must be a path on
//! the same site), never a full URL, so the flow cannot be used as an open redirect.
//! Pending sign-ins live in this process (at most 10,000, for 10 minutes each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::provider::Provider;
use super::session::{self, CookieKey, Lifetime, Selector, Session, SessionKey, SessionStore};
use crate::config::{Requirements, Snapshot};
use crate::error::ProxyError;
use crate::pipeline::body::ProxyBody;
use crate::telemetry::{LoginLabels, Metrics, SessionEventLabels, StepUpLabels};
use crate::Shared;

/// How long a started sign-in may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins pending at once; beyond it the oldest is dropped.
pub const MAX_PENDING: usize = 10_000;
/// Largest back-channel logout request body.
const MAX_LOGOUT_BODY: usize = 64 * 1024;
/// Longest `return_to`.
const MAX_RETURN_TO: usize = 2048;
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a step-up asks the provider for, and checks in the answer.
#[derive(Debug, Clone, Default)]
pub struct StepUp {
    /// Accepted `acr` values (empty: any).
    pub acr_values: Vec<String>,
    /// Longest accepted age of `auth_time`.
    pub max_age: Option<Duration>,
}

impl From<&Requirements> for StepUp {
    fn from(r: &Requirements) -> Self {
        StepUp {
            acr_values: r.acr_values.clone(),
            max_age: r.max_age,
        }
    }
}

/// A sign-in between the redirect to the provider and the callback.
#[derive(Debug, Clone)]
struct Pending {
    provider: String,
    verifier: String,
    nonce: String,
    redirect_uri: String,
    return_to: String,
    started: u64,
    step_up: Option<StepUp>,
    replaces: Option<SessionKey>,
}

/// Sessions and the sign-ins in progress; kept across reloads.
#[derive(Debug)]
pub struct Sessions {
    /// Where sessions live.
    pub store: Arc<dyn SessionStore>,
    pending: Mutex<HashMap<String, Pending>>,
    random_key: CookieKey,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            store: Arc::new(session::MemoryStore::default()),
            pending: Mutex::new(HashMap::new()),
            random_key: CookieKey::random(),
        }
    }
}

/// Scheme and host the browser used: where the callback is.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// Host (with port) as sent.
    pub host: String,
}

fn unix_now() -> u64 {
    crate::unix_now() as u64
}

fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(session::random_bytes::<32>())
}

/// `v` if it is a path on this site (`/…`, not `//…`, no backslash or control character).
pub fn safe_return_to(v: &str) -> Option<&str> {
    let ok = v.starts_with('/')
        && !v.starts_with("//")
        && v.len() <= MAX_RETURN_TO
        && !v.bytes().any(|b| b == b'\\' || b.is_ascii_control())
        && v.parse::<http::uri::PathAndQuery>().is_ok();
    ok.then_some(v)
}

/// The `return_to` query parameter (default `/`), which must be a path on this site.
fn return_to_param(uri: &http::Uri) -> Result<String, ProxyError> {
    match query_params(uri).remove("return_to") {
        None => Ok("/".to_string()),
        Some(r) => safe_return_to(&r).map(str::to_string).ok_or(ProxyError::BadRequest {
            reason: "return_to is not a path on this site",
        }),
    }
}

fn query_params(uri: &http::Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn redirect(location: &str, cookies: &[HeaderValue]) -> Result<Response<ProxyBody>, ProxyError> {
    let location = HeaderValue::from_str(location).map_err(|_| ProxyError::BadRequest {
        reason: "redirect target is not valid header text",
    })?;
    let mut resp = Response::new(ProxyBody::local(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    Ok(resp)
}

fn login_cookie_name(snap: &Snapshot) -> String {
    format!("{}-login", snap.config.sessions.cookie_name)
}

fn lifetime(snap: &Snapshot) -> Lifetime {
    Lifetime {
        idle: snap.config.sessions.idle_timeout,
        absolute: snap.config.sessions.absolute_timeout,
    }
}

fn count_event(metrics: &Metrics, event: &'static str) {
    metrics
        .session_events
        .get_or_create(&SessionEventLabels { event })
        .inc();
}

fn count_login(metrics: &Metrics, provider: &str, result: &'static str) {
    metrics
        .logins
        .get_or_create(&LoginLabels {
            provider: provider.to_string(),
            result,
        })
        .inc();
}

/// Counts a step-up by kind (`bearer`, `browser`) and result (`issued`, `satisfied`, `failed`).
pub fn count_step_up(metrics: &Metrics, kind: &'static str, result: &'static str) {
    metrics.step_ups.get_or_create(&StepUpLabels { kind, result }).inc();
}

// === impl Sessions ===

impl Sessions {
    /// The key sealing cookies under `snap`.
    fn key<'a>(&'a self, snap: &'a Snapshot) -> &'a CookieKey {
        snap.cookie_key.as_deref().unwrap_or(&self.random_key)
    }

    fn set_gauge(&self, metrics: &Metrics) {
        metrics.sessions_active.set(self.store.len() as i64);
    }

    fn remember(&self, state: String, p: Pending) {
        let Ok(mut m) = self.pending.lock() else { return };
        if m.len() >= MAX_PENDING {
            let now = p.started;
            m.retain(|_, v| now.saturating_sub(v.started) <= LOGIN_TTL.as_secs());
            while m.len() >= MAX_PENDING {
                let Some(oldest) = m.iter().min_by_key(|(_, v)| v.started).map(|(k, _)| k.clone()) else {
                    break;
                };
                m.remove(&oldest);
            }
        }
        m.insert(state, p);
    }

    fn take(&self, state: &str, now: u64) -> Option<Pending> {
        let p = self.pending.lock().ok()?.remove(state)?;
        (now.saturating_sub(p.started) <= LOGIN_TTL.as_secs()).then_some(p)
    }

    /// Sign-ins pending now.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The live session named by the request's cookie, if any. Ended sessions (idle, absolute,
    /// revoked subject) are removed on the way.
    pub async fn current(
        &self,
        shared: &Shared,
        snap: &Snapshot,
        headers: &http::HeaderMap,
    ) -> Result<Option<(SessionKey, Session)>, ProxyError> {
        let name = &snap.config.sessions.cookie_name;
        let Some(value) = session::cookie(headers, name) else {
            return Ok(None);
        };
        let Some(secret) = self.key(snap).open(name, value).filter(|s| s.len() == 32) else {
            count_event(&shared.metrics, "invalid_cookie");
            return Ok(None);
        };
        let key = session::sha256(&secret);
        let found = self.store.load(key).await.map_err(|e| {
            tracing::warn!(error = %e, "session store failed");
            ProxyError::IdentityUnavailable {
                provider: "session store".into(),
            }
        })?;
        let Some(s) = found else {
            count_event(&shared.metrics, "unknown");
            return Ok(None);
        };
        let now = unix_now();
        let ended = match s.expired(now, lifetime(snap)) {
            Some("idle") => Some("expired_idle"),
            Some(_) => Some("expired_absolute"),
            None => shared.revocations.is_revoked(&s.claims).then_some("revoked"),
        };
        if let Some(event) = ended {
            let _ = self.store.remove(Selector::Key(key)).await;
            self.set_gauge(&shared.metrics);
            count_event(&shared.metrics, event);
            tracing::info!(session = %session::hex(&key), subject = %s.subject, reason = event, "session ended");
            return Ok(None);
        }
        if now > s.last_seen {
            let _ = self.store.touch(key, now).await;
        }
        Ok(Some((key, s)))
    }

    /// Ends the sessions that have expired, every `every`, until `stop`.
    pub async fn sweep(shared: std::sync::Arc<Shared>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let life = lifetime(&shared.snapshot.load());
            let sessions = &shared.sessions;
            if let Ok(ended) = sessions.store.purge(unix_now(), life).await {
                for (key, why) in &ended {
                    count_event(
                        &shared.metrics,
                        if *why == "idle" {
                            "expired_idle"
                        } else {
                            "expired_absolute"
                        },
                    );
                    tracing::info!(session = %session::hex(key), reason = why, "session expired");
                }
            }
            sessions.set_gauge(&shared.metrics);
        }
    }

    /// Removes sessions (admin API, back-channel logout); returns how many.
    pub async fn revoke(&self, metrics: &Metrics, which: Selector, event: &'static str) -> usize {
        let gone = self.store.remove(which).await.unwrap_or_default();
        self.set_gauge(metrics);
        for (k, s) in &gone {
            count_event(metrics, event);
            tracing::warn!(session = %session::hex(k), subject = %s.subject, provider = %s.provider, reason = event, "session revoked");
        }
        gone.len()
    }
}

/// Sends the browser to the provider to sign in (or to step up, with `step_up`), coming back
/// to `return_to`.
pub fn begin(
    shared: &Shared,
    snap: &Snapshot,
    provider: &Provider,
    origin: &Origin,
    return_to: &str,
    step_up: Option<StepUp>,
    replaces: Option<SessionKey>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let unavailable = || ProxyError::IdentityUnavailable {
        provider: provider.config.name.clone(),
    };
    let login = provider.config.login.as_ref().ok_or_else(unavailable)?;
    let endpoints = provider.endpoints().ok_or_else(unavailable)?;
    let authorize = endpoints.authorization.as_deref().ok_or_else(unavailable)?;
    let (state, nonce, verifier) = (random_text(), random_text(), random_text());
    let challenge = URL_SAFE_NO_PAD.encode(session::sha256(verifier.as_bytes()));
    let redirect_uri = format!(
        "{}://{}{}",
        origin.scheme, origin.host, snap.config.sessions.callback_path
    );
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", &login.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &login.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    // Ask for what sessions record, where the provider takes the claims parameter (OIDC Core
    // §5.5); on a step-up, `acr_values` asks for the acr.
    if endpoints.claims_parameter {
        let claims = if step_up.is_some() {
            r#"{"id_token":{"amr":null,"auth_time":{"essential":true}}}"#
        } else {
            r#"{"id_token":{"acr":null,"amr":null,"auth_time":{"essential":true}}}"#
        };
        q.append_pair("claims", claims);
    }
    if let Some(s) = &step_up {
        if !s.acr_values.is_empty() {
            q.append_pair("acr_values", &s.acr_values.join(" "));
        }
        if let Some(m) = s.max_age {
            q.append_pair("max_age", &m.as_secs().to_string());
        }
        // The session exists but is not strong or fresh enough: the provider must authenticate
        // again rather than reuse its own session.
        q.append_pair("prompt", "login");
    }
    let sep = if authorize.contains('?') { '&' } else { '?' };
    let location = format!("{authorize}{sep}{}", q.finish());
    let cookie_name = login_cookie_name(snap);
    let cookie = session::set_cookie(
        &cookie_name,
        &shared.sessions.key(snap).seal(&cookie_name, state.as_bytes()),
        LOGIN_TTL,
    );
    let is_step_up = step_up.is_some();
    shared.sessions.remember(
        state,
        Pending {
            provider: provider.config.name.clone(),
            verifier,
            nonce,
            redirect_uri,
            return_to: return_to.to_string(),
            started: unix_now(),
            step_up,
            replaces,
        },
    );
    count_login(&shared.metrics, &provider.config.name, "started");
    if is_step_up {
        count_step_up(&shared.metrics, "browser", "issued");
    }
    redirect(&location, &[cookie])
}

/// Answers the gateway's own paths: sign-in start, callback, logout, back-channel logout.
pub async fn serve(
    shared: &Shared,
    snap: &Snapshot,
    conn: &crate::conn::ConnInfo,
    origin: &Origin,
    req: http::Request<crate::pipeline::body::ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let paths = &snap.config.sessions;
    let path = req.uri().path();
    let get = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    if path == paths.backchannel_logout_path {
        if req.method() != http::Method::POST {
            return Err(ProxyError::MethodNotAllowed { allow: "POST".into() });
        }
        return backchannel_logout(shared, snap, req).await;
    }
    if path == paths.logout_path {
        if !get && req.method() != http::Method::POST {
            return Err(ProxyError::MethodNotAllowed {
                allow: "GET, HEAD, POST".into(),
            });
        }
        return logout(shared, snap, &req).await;
    }
    if !get {
        return Err(ProxyError::MethodNotAllowed {
            allow: "GET, HEAD".into(),
        });
    }
    if path == paths.callback_path {
        return callback(shared, snap, conn, &req).await;
    }
    // The sign-in start: for the route that `return_to` names.
    let return_to = return_to_param(req.uri())?;
    let return_to = return_to.as_str();
    let target: http::Uri = return_to.parse().map_err(|_| ProxyError::BadRequest {
        reason: "return_to is not a path on this site",
    })?;
    let host = crate::pipeline::route::normalize_host(&origin.host);
    // The browser asking to sign in is the one that will follow the redirect: its headers route.
    let provider = match snap
        .router
        .find(&host, target.path(), &http::Method::GET, req.headers())
    {
        crate::pipeline::route::RouteMatch::Found(r) => r.login.clone(),
        _ => None,
    };
    let Some(provider) = provider else {
        return Err(ProxyError::BadRequest {
            reason: "no route with browser sign-in at return_to",
        });
    };
    begin(shared, snap, &provider, origin, return_to, None, None)
}

fn refused(status: StatusCode, reason: &'static str) -> ProxyError {
    ProxyError::Login { status, reason }
}

async fn callback(
    shared: &Shared,
    snap: &Snapshot,
    conn: &crate::conn::ConnInfo,
    req: &http::Request<crate::pipeline::body::ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let metrics = &shared.metrics;
    let params = query_params(req.uri());
    let cookie_name = login_cookie_name(snap);
    let clear_login = session::set_cookie(&cookie_name, "", Duration::ZERO);
    // The state must be the one this browser was given, and still pending (used once).
    let state = params.get("state").map(String::as_str).unwrap_or("");
    let bound = session::cookie(req.headers(), &cookie_name)
        .and_then(|v| shared.sessions.key(snap).open(&cookie_name, v))
        .is_some_and(|s| !state.is_empty() && s == state.as_bytes());
    let pending = if bound {
        shared.sessions.take(state, unix_now())
    } else {
        None
    };
    let Some(pending) = pending else {
        count_login(metrics, "none", "invalid_state");
        return Err(refused(StatusCode::BAD_REQUEST, "login_state"));
    };
    let name = pending.provider.as_str();
    let Some(provider) = snap.providers.get(name).filter(|p| p.config.login.is_some()) else {
        count_login(metrics, name, "provider_gone");
        return Err(refused(StatusCode::BAD_REQUEST, "login_state"));
    };
    let fail = |result: &'static str, status: StatusCode, reason: &'static str| {
        count_login(metrics, name, result);
        if pending.step_up.is_some() {
            count_step_up(metrics, "browser", "failed");
        }
        refused(status, reason)
    };
    if let Some(error) = params.get("error") {
        tracing::info!(provider = name, error = %error.chars().take(64).collect::<String>(), "the provider refused the sign-in");
        return Err(fail("provider_error", StatusCode::FORBIDDEN, "login_failed"));
    }
    // RFC 9207: when the provider names itself, it must be the one we sent the browser to.
    if params.get("iss").is_some_and(|iss| iss != &provider.config.issuer) {
        return Err(fail("wrong_issuer", StatusCode::FORBIDDEN, "login_failed"));
    }
    let Some(code) = params.get("code") else {
        return Err(fail("no_code", StatusCode::BAD_REQUEST, "login_failed"));
    };
    let id_token = match provider
        .exchange_code(code, &pending.redirect_uri, &pending.verifier)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(provider = name, error = %e, "authorization code exchange failed");
            return Err(fail("exchange_failed", StatusCode::BAD_GATEWAY, "login_exchange"));
        }
    };
    let claims = match provider.verify_client_token(&id_token).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(provider = name, error = %e, "ID token refused");
            return Err(fail("invalid_id_token", StatusCode::FORBIDDEN, "login_failed"));
        }
    };
    let text = |k: &str| claims.all.get(k).and_then(Value::as_str);
    if text("nonce") != Some(pending.nonce.as_str()) {
        tracing::warn!(provider = name, "ID token nonce missing or different");
        return Err(fail("nonce_mismatch", StatusCode::FORBIDDEN, "login_failed"));
    }
    let client_id = provider.config.login.as_ref().map(|l| l.client_id.as_str());
    if claims.all.contains_key("azp") && text("azp") != client_id {
        return Err(fail("invalid_id_token", StatusCode::FORBIDDEN, "login_failed"));
    }
    let Some(subject) = claims.subject.clone() else {
        return Err(fail("invalid_id_token", StatusCode::FORBIDDEN, "login_failed"));
    };
    let now = unix_now();
    if let Some(step) = &pending.step_up {
        // The acr and auth_time the provider returned are checked, not assumed.
        let need = Requirements {
            acr_values: step.acr_values.clone(),
            max_age: step.max_age,
            ..Default::default()
        };
        if let Err(r) = super::check(&claims, &need, now) {
            tracing::warn!(provider = name, subject = %subject, acr = ?text("acr"), refusal = ?r, "step-up not satisfied by the provider's answer");
            return Err(fail("step_up_refused", StatusCode::FORBIDDEN, "step_up_failed"));
        }
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect())
        .unwrap_or_default();
    let session = Session {
        provider: name.to_string(),
        subject: subject.clone(),
        sid: text("sid").map(str::to_string),
        acr: text("acr").map(str::to_string),
        amr: claims
            .all
            .get("amr")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        auth_time: claims.all.get("auth_time").and_then(Value::as_u64),
        created: now,
        last_seen: now,
        client_addr: conn.peer.ip(),
        user_agent,
        claims: Arc::new(claims),
        id_token,
    };
    let secret = session::random_bytes::<32>();
    let key = session::sha256(&secret);
    let sessions = &shared.sessions;
    let max = snap.config.sessions.max_sessions;
    let summary = (session.acr.clone(), session.sid.is_some());
    let evicted = sessions
        .store
        .save(key, session, max, lifetime(snap))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "session store failed");
            ProxyError::IdentityUnavailable {
                provider: "session store".into(),
            }
        })?;
    for _ in 0..evicted {
        count_event(metrics, "evicted");
    }
    if let Some(old) = pending.replaces {
        let _ = sessions.store.remove(Selector::Key(old)).await;
        count_event(metrics, "replaced");
    }
    sessions.set_gauge(metrics);
    count_event(metrics, "created");
    count_login(metrics, name, "success");
    if pending.step_up.is_some() {
        count_step_up(metrics, "browser", "satisfied");
    }
    tracing::info!(session = %session::hex(&key), subject = %subject, provider = name, acr = ?summary.0, step_up = pending.step_up.is_some(), "signed in");
    let cookie_name = &snap.config.sessions.cookie_name;
    let cookie = session::set_cookie(
        cookie_name,
        &sessions.key(snap).seal(cookie_name, &secret),
        snap.config.sessions.absolute_timeout,
    );
    redirect(&pending.return_to, &[cookie, clear_login])
}

async fn logout(
    shared: &Shared,
    snap: &Snapshot,
    req: &http::Request<crate::pipeline::body::ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let return_to = return_to_param(req.uri())?;
    let return_to = return_to.as_str();
    let clear = session::set_cookie(&snap.config.sessions.cookie_name, "", Duration::ZERO);
    let Some((key, s)) = shared.sessions.current(shared, snap, req.headers()).await? else {
        return redirect(return_to, &[clear]);
    };
    shared
        .sessions
        .revoke(&shared.metrics, Selector::Key(key), "logged_out")
        .await;
    // RP-initiated logout at the provider, when it offers it.
    let provider = snap.providers.get(&s.provider);
    let end = provider.and_then(|p| Some((p, p.endpoints()?.end_session.clone()?)));
    let Some((p, end)) = end else {
        return redirect(return_to, &[clear]);
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("id_token_hint", &s.id_token);
    if let Some(login) = &p.config.login {
        q.append_pair("client_id", &login.client_id);
        if let Some(u) = &login.post_logout_redirect_uri {
            q.append_pair("post_logout_redirect_uri", u);
        }
    }
    let sep = if end.contains('?') { '&' } else { '?' };
    redirect(&format!("{end}{sep}{}", q.finish()), &[clear])
}

fn backchannel_answer(status: StatusCode, error: Option<&str>) -> Response<ProxyBody> {
    let body = error
        .map(|e| serde_json::json!({ "error": "invalid_request", "error_description": e }).to_string())
        .unwrap_or_default();
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if error.is_some() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// The `iss` of a JWT, unverified (only to pick the provider that verifies it).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// OpenID Connect Back-Channel Logout 1.0: the provider posts a logout token; the sessions it
/// names end.
async fn backchannel_logout(
    shared: &Shared,
    snap: &Snapshot,
    req: http::Request<crate::pipeline::body::ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let metrics = &shared.metrics;
    let invalid = |provider: &str, why: &'static str| {
        metrics
            .backchannel_logouts
            .get_or_create(&LoginLabels {
                provider: provider.to_string(),
                result: "invalid",
            })
            .inc();
        tracing::warn!(provider, reason = why, "back-channel logout refused");
        Ok(backchannel_answer(StatusCode::BAD_REQUEST, Some(why)))
    };
    let body = http_body_util::Limited::new(req.into_body(), MAX_LOGOUT_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let Ok(body) = body else {
        return invalid("none", "the body is too large or broken");
    };
    let token = form_urlencoded::parse(&body).find_map(|(k, v)| (k == "logout_token").then(|| v.into_owned()));
    let Some(token) = token else {
        return invalid("none", "no logout_token");
    };
    let issuer = unverified_issuer(&token);
    let provider = snap
        .providers
        .values()
        .find(|p| p.config.login.is_some() && Some(&p.config.issuer) == issuer.as_ref());
    let Some(provider) = provider else {
        return invalid("none", "no provider with this issuer");
    };
    let name = provider.config.name.as_str();
    let claims = match provider.verify_client_token(&token).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(provider = name, error = %e, "logout token refused");
            return invalid(name, "the logout token is not valid");
        }
    };
    let has_event = claims
        .all
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return invalid(name, "the logout token has no back-channel logout event");
    }
    if claims.all.contains_key("nonce") {
        return invalid(name, "a logout token must not carry a nonce");
    }
    if claims.issued_at.is_none() {
        return invalid(name, "the logout token has no iat");
    }
    let sid = claims.all.get("sid").and_then(Value::as_str);
    let which = match (sid, claims.subject.as_deref()) {
        (Some(sid), _) => Selector::ProviderSid {
            provider: name.to_string(),
            sid: sid.to_string(),
        },
        (None, Some(sub)) => Selector::ProviderSubject {
            provider: name.to_string(),
            subject: sub.to_string(),
        },
        (None, None) => return invalid(name, "the logout token names neither sub nor sid"),
    };
    let n = shared.sessions.revoke(metrics, which, "backchannel_logout").await;
    metrics
        .backchannel_logouts
        .get_or_create(&LoginLabels {
            provider: name.to_string(),
            result: "accepted",
        })
        .inc();
    tracing::info!(provider = name, subject = ?claims.subject, sessions = n, "back-channel logout");
    Ok(backchannel_answer(StatusCode::OK, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_a_path_on_this_site() {
        for ok in ["/", "/app?x=1", "/a/b#frag".split('#').next().unwrap_or("/")] {
            assert_eq!(safe_return_to(ok), Some(ok));
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "evil.example",
            "",
            "/a\r\nLocation: x",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad:?}");
        }
        assert_eq!(safe_return_to(&format!("/{}", "a".repeat(MAX_RETURN_TO))), None);
    }
}
