//! Admin listener (loopback by default), separate from client traffic:
//!
//! - `GET /healthz`: the process is alive;
//! - `GET /readyz`: listeners are bound and a config is loaded (503 while draining);
//! - `GET /metrics`: OpenMetrics when the scraper asks for it (`Accept`), else the classic
//!   Prometheus text format;
//! - `POST /reload`: reload the config file now; 200 with the changes, or 422 with every problem;
//! - `GET /config/schema`: the JSON Schema of the config file;
//! - `GET /.well-known/jwks.json`: the keys that verify the gateway's identity assertions;
//! - `POST /identity/revoke?subject=S`: refuse every token of `S` issued until now and end
//!   its browser sessions; `GET /identity/revocations` lists revoked subjects;
//! - `POST /identity/revoke?session=H`: end one browser session by its handle;
//!   `GET /identity/sessions` lists sessions (most recently seen first, at most 1000);
//! - `GET /risk/top?limit=N`: the riskiest entities now (default 20, at most 1000), with their
//!   reasons; `GET /risk/{entity}` (`session:<16 hex digits>`, `principal:<subject>`,
//!   `client:<address>`, percent-encoded): one entity's risk, reasons and recent history;
//! - `GET /debug/pprof/profile?seconds=N[&format=svg]`: a CPU profile of the next N seconds
//!   (1..=60, default 10) as pprof protobuf or a flamegraph; 409 while another is running.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error;
use crate::identity::session::{self, Selector};
use crate::pipeline::body::Body;
use crate::pipeline::text;
use crate::reload::ReloadError;
use crate::Shared;

/// Serves the admin API until `stop` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: &str, request_id: &str) -> Response<Body> {
    error::problem(status, slug, title, detail, request_id).map(crate::pipeline::body::full)
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let id = crate::pipeline::forward::new_request_id();
    let id = id.to_str().unwrap_or("");
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            shared.refresh_scraped_gauges();
            let wants_openmetrics = req
                .headers()
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            if wants_openmetrics {
                let body = crate::telemetry::render_openmetrics(&shared.registry);
                text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                )
            } else {
                let body = crate::telemetry::render_classic(&shared.registry);
                text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
            }
        }
        (&Method::POST, "/identity/revoke") => {
            let params: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let session = params.get("session").and_then(|h| parse_handle(h));
            let subject = params.get("subject").filter(|s| !s.is_empty() && s.len() <= 1024);
            if let Some(key) = session {
                let n = shared
                    .sessions
                    .revoke(&shared.metrics, Selector::Key(key), "revoked")
                    .await;
                let status = if n == 0 { StatusCode::NOT_FOUND } else { StatusCode::OK };
                return text(
                    status,
                    "application/json",
                    serde_json::json!({ "session": session::hex(&key), "sessions_ended": n }).to_string(),
                );
            }
            match subject {
                Some(sub) => {
                    let now = crate::unix_now() as u64;
                    shared.revocations.revoke(sub, now);
                    shared.metrics.revocations.inc();
                    let n = shared
                        .sessions
                        .revoke(&shared.metrics, Selector::Subject(sub.clone()), "revoked")
                        .await;
                    tracing::warn!(subject = %sub, sessions = n, "subject revoked: its tokens issued until now are refused and its sessions ended");
                    text(
                        StatusCode::OK,
                        "application/json",
                        serde_json::json!({ "subject": sub, "revoked_at": now, "sessions_ended": n }).to_string(),
                    )
                }
                None => problem(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Bad Request",
                    "Give the subject or the session: POST /identity/revoke?subject=... or ?session=<handle>",
                    id,
                ),
            }
        }
        (&Method::GET, "/debug/pprof/profile") => {
            use crate::telemetry::profile::{Format, ProfileError, MAX_SECONDS};
            let params: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let seconds = match params.get("seconds").map(|s| s.parse::<u64>()) {
                None => Ok(10),
                Some(Ok(n)) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
                Some(_) => Err(()),
            };
            let format = match params.get("format").map(String::as_str) {
                None | Some("pprof") | Some("proto") => Ok(Format::Pprof),
                Some("svg") | Some("flamegraph") => Ok(Format::Svg),
                Some(_) => Err(()),
            };
            let (Ok(seconds), Ok(format)) = (seconds, format) else {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Bad Request",
                    "seconds is a whole number from 1 to 60; format is pprof (default) or svg",
                    id,
                );
            };
            match shared.profiles.capture(&shared.metrics, "admin", seconds, format).await {
                Ok(bytes) => match format {
                    Format::Pprof => text(StatusCode::OK, "application/octet-stream", bytes),
                    Format::Svg => text(StatusCode::OK, "image/svg+xml", bytes),
                },
                Err(ProfileError::Busy) => problem(
                    StatusCode::CONFLICT,
                    "profile_busy",
                    "Conflict",
                    "A profile is already being captured; try again when it ends.",
                    id,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "profile capture failed");
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "profile_failed",
                        "Internal Server Error",
                        "The profile could not be captured.",
                        id,
                    )
                }
            }
        }
        (&Method::GET, "/risk/top") => {
            let limit = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "limit")
                .map(|(_, v)| v.parse::<usize>());
            let limit = match limit {
                None => 20,
                Some(Ok(n)) if (1..=1000).contains(&n) => n,
                Some(_) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "bad_limit",
                        "Bad Request",
                        "limit must be a number from 1 to 1000.",
                        id,
                    )
                }
            };
            let view = shared.risk.load();
            let entities: Vec<serde_json::Value> = view
                .top(limit)
                .into_iter()
                .map(|(k, r)| risk_doc(&k.to_string(), Some(r), false))
                .collect();
            let doc = serde_json::json!({
                "published_ms": view.published_ms,
                "stale": view.stale(crate::unix_now_ms(), shared.snapshot.load().config.engine.stale_after.as_millis() as u64),
                "tracked": view.tracked,
                "risky": view.entities.len(),
                "population_model_samples": view.model_samples,
                "entities": entities,
            });
            text(StatusCode::OK, "application/json", doc.to_string())
        }
        (&Method::GET, p) if p.starts_with("/risk/") => {
            let raw = &p["/risk/".len()..];
            let Some(key) = percent_decode(raw).and_then(|t| baseline_engine::entity::EntityKey::parse(&t)) else {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "bad_entity",
                    "Bad Request",
                    "Name the entity as session:<16 hex digits>, principal:<subject> or client:<address>.",
                    id,
                );
            };
            let view = shared.risk.load();
            text(
                StatusCode::OK,
                "application/json",
                risk_doc(&key.to_string(), view.get(&key), true).to_string(),
            )
        }
        (&Method::GET, "/identity/sessions") => {
            let list = shared.sessions.store.list(1000).await.unwrap_or_default();
            let docs: Vec<serde_json::Value> = list.iter().map(|(k, s)| s.summary(k)).collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::json!({ "sessions": docs, "total": shared.sessions.store.len() }).to_string(),
            )
        }
        (&Method::GET, "/identity/revocations") => {
            let list: Vec<serde_json::Value> = shared
                .revocations
                .list()
                .into_iter()
                .map(|(s, t)| serde_json::json!({ "subject": s, "revoked_at": t }))
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::Value::Array(list).to_string(),
            )
        }
        (&Method::GET, "/.well-known/jwks.json") => {
            let jwks = shared
                .snapshot
                .load()
                .signer
                .as_ref()
                .map(|s| s.jwks())
                .unwrap_or_else(|| serde_json::json!({ "keys": [] }));
            text(StatusCode::OK, "application/jwk-set+json", jwks.to_string())
        }
        (&Method::GET, "/config/schema") => text(
            StatusCode::OK,
            "application/schema+json",
            serde_json::to_vec_pretty(&crate::config::json_schema()).unwrap_or_default(),
        ),
        (&Method::POST, "/reload") => match crate::reload::reload(shared).await {
            Ok(o) => {
                let doc = serde_json::json!({ "generation": o.generation, "changes": o.changes });
                text(StatusCode::OK, "application/json", doc.to_string())
            }
            Err(ReloadError::NoFile) => problem(
                StatusCode::CONFLICT,
                "no_config_file",
                "Conflict",
                "The gateway was not started from a config file.",
                id,
            ),
            Err(ReloadError::Invalid(errors)) => {
                let problems: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                let doc = serde_json::json!({
                    "type": "urn:gateway:problem:invalid-config",
                    "title": "Invalid config",
                    "status": 422,
                    "detail": "The config was rejected; the running config keeps serving.",
                    "problems": problems,
                });
                let mut r = text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "application/problem+json",
                    doc.to_string(),
                );
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                r
            }
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/config/schema" | "/reload") => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
            "This admin endpoint does not accept the request method.",
            id,
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "no_route",
            "Not Found",
            "No such admin endpoint.",
            id,
        ),
    }
}

/// An entity's risk as the admin API shows it.
fn risk_doc(entity: &str, r: Option<&Arc<baseline_engine::store::EntityRisk>>, history: bool) -> serde_json::Value {
    let Some(r) = r else {
        return serde_json::json!({ "entity": entity, "score": 0.0, "reasons": [], "history": [] });
    };
    let reasons: Vec<serde_json::Value> = r
        .reasons
        .iter()
        .map(|x| {
            serde_json::json!({
                "signal": x.signal,
                "observed": x.observed,
                "expected": [x.expected.0, x.expected.1],
                "weight": x.weight,
                "text": x.text(),
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "entity": entity,
        "score": r.score,
        "reasons": reasons,
        "scored_at_ms": r.at_ms,
        "requests": r.requests,
    });
    if history {
        doc["history"] = r
            .history
            .iter()
            .map(|(t, s)| serde_json::json!({ "at_ms": t, "score": s }))
            .collect();
    }
    doc
}

/// Decodes `%XX` escapes in a path segment; `None` when one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A session handle (64 hex digits) as the store key.
fn parse_handle(h: &str) -> Option<session::SessionKey> {
    if h.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}
