//! An OpenID provider as the gateway sees it: its key set, kept fresh, and the verification of
//! its bearer tokens.
//!
//! - Discovery reads `{issuer}/.well-known/openid-configuration` (whose `issuer` must match) for
//!   `jwks_uri`, then the key set.
//! - The key set is refreshed in the background before its `Cache-Control: max-age` runs out
//!   (80% of it, between 30 s and 1 h; 5 min without one). Failures are retried with backoff
//!   (1 s doubling to 60 s), and the last good key set keeps serving.
//! - A token naming an unknown key id forces one refresh, at most once per
//!   `min_refresh_interval`, so a rotation at the provider works without a restart while junk key
//!   ids cannot make the gateway hammer the provider.
//! - Until the first key set loads, routes that need the provider answer 503.
//! - Verified tokens are cached by SHA-256 digest until they expire (at most 10,000), so a
//!   repeated token skips the signature check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::time::Instant;

use super::jwt::{self, Claims, JwtError, KeySet, Validation};
use crate::config::ProviderConfig;
use crate::error::BoxError;
use crate::telemetry::{AuthLabels, LoginLabels, Metrics, ProviderLabels, ProviderResultLabels};

const CACHE_CAP: usize = 10_000;
const FETCH_LIMIT: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a bearer token did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The provider's keys are not loaded (yet).
    #[error("identity provider {0} is unavailable")]
    Unavailable(String),
    /// The token was refused.
    #[error(transparent)]
    Invalid(#[from] JwtError),
}

/// Metric handles of one provider.
#[derive(Debug)]
struct ProviderMetrics {
    family: Metrics,
    name: String,
    refresh_ok: Counter,
    refresh_failed: Counter,
    forced: Counter,
    forced_limited: Counter,
    ready: Gauge,
    keys: Gauge,
}

/// A provider with its current key set.
pub struct Provider {
    /// Its config.
    pub config: ProviderConfig,
    validation: Validation,
    id_validation: Option<Validation>,
    login_secret: Option<String>,
    endpoints: ArcSwapOption<Endpoints>,
    keys: ArcSwapOption<KeySet>,
    tls: Arc<rustls::ClientConfig>,
    wake: Arc<tokio::sync::Notify>,
    loaded: tokio::sync::watch::Sender<u64>,
    last_forced: Mutex<Option<Instant>>,
    cache: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
    metrics: ProviderMetrics,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("ready", &self.keys.load().is_some())
            .finish()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let cc = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',')
        .find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok())
        .map(Duration::from_secs)
}

/// Sends `req` to `url` and reads a JSON answer (bounded in size and time), with its
/// `Cache-Control: max-age`. A status other than 200 is an error carrying the body's `error`.
async fn fetch_json(
    url: &str,
    req: http::request::Builder,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(Value, Option<Duration>), BoxError> {
    let req = req.header(http::header::ACCEPT, "application/json");
    let (status, headers, body) = crate::outbound::exchange(url, req, body, tls, FETCH_LIMIT, FETCH_TIMEOUT).await?;
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != http::StatusCode::OK {
        let code = doc.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("HTTP {status} {code}").trim_end().to_string().into());
    }
    if doc.is_null() {
        return Err("the answer is not JSON".into());
    }
    Ok((doc, max_age(&headers)))
}

/// GETs a JSON document.
async fn get_json(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<(Value, Option<Duration>), BoxError> {
    fetch_json(url, http::Request::get("/"), Bytes::new(), tls).await
}

/// The provider's endpoints from discovery.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `authorization_endpoint`.
    pub authorization: Option<String>,
    /// `token_endpoint`.
    pub token: Option<String>,
    /// `end_session_endpoint` (RP-initiated logout).
    pub end_session: Option<String>,
    /// `claims_parameter_supported`.
    pub claims_parameter: bool,
}

// === impl Provider ===

impl Provider {
    /// Builds a provider (keys not loaded yet; [`Provider::start`] loads and refreshes them).
    /// `login_secret` is the login client's secret, read from wherever the config keeps it.
    pub fn new(
        config: ProviderConfig,
        login_secret: Option<String>,
        tls: Arc<rustls::ClientConfig>,
        metrics: &Metrics,
    ) -> Arc<Provider> {
        let validation = Validation {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms: config.algorithms.clone(),
            leeway_secs: config.leeway_secs,
            require_at_jwt: config.require_at_jwt,
            max_token_bytes: config.max_token_bytes,
        };
        // ID and logout tokens: audience is the login client, no access-token type.
        let id_validation = config.login.as_ref().map(|l| Validation {
            audiences: vec![l.client_id.clone()],
            require_at_jwt: false,
            max_token_bytes: validation.max_token_bytes.max(16 * 1024),
            ..validation.clone()
        });
        let name = config.name.clone();
        // One statement per handle: `get_or_create` returns a guard on the family's lock, and a
        // second call on the same family within one statement would wait for it forever.
        let counter = |family: &prometheus_client::metrics::family::Family<ProviderResultLabels, Counter>, result| {
            family
                .get_or_create(&ProviderResultLabels {
                    provider: name.clone(),
                    result,
                })
                .clone()
        };
        let refresh_ok = counter(&metrics.key_refreshes, "success");
        let refresh_failed = counter(&metrics.key_refreshes, "failure");
        let forced = counter(&metrics.forced_refreshes, "performed");
        let forced_limited = counter(&metrics.forced_refreshes, "rate_limited");
        let pl = ProviderLabels { provider: name.clone() };
        let ready = metrics.provider_ready.get_or_create(&pl).clone();
        let keys = metrics.provider_keys.get_or_create(&pl).clone();
        let m = ProviderMetrics {
            family: metrics.clone(),
            name: name.clone(),
            refresh_ok,
            refresh_failed,
            forced,
            forced_limited,
            ready,
            keys,
        };
        m.ready.set(0);
        if config.login.is_some() {
            for result in ["started", "success"] {
                let _ = metrics.logins.get_or_create(&LoginLabels {
                    provider: name.clone(),
                    result,
                });
            }
            for result in ["accepted", "invalid"] {
                let _ = metrics.backchannel_logouts.get_or_create(&LoginLabels {
                    provider: name.clone(),
                    result,
                });
            }
        }
        Arc::new(Provider {
            config,
            validation,
            id_validation,
            login_secret,
            endpoints: ArcSwapOption::empty(),
            keys: ArcSwapOption::empty(),
            tls,
            wake: Arc::new(tokio::sync::Notify::new()),
            loaded: tokio::sync::watch::channel(0).0,
            last_forced: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            metrics: m,
        })
    }

    /// Starts the background task that loads and refreshes the key set; it ends when the
    /// provider is dropped (a reload that changed it).
    pub fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(refresh_loop(weak));
    }

    /// Installs a key set directly (as a successful load would).
    pub fn set_keys(&self, keys: KeySet) {
        self.metrics.keys.set(keys.len() as i64);
        self.metrics.ready.set(1);
        self.keys.store(Some(Arc::new(keys)));
    }

    /// Whether keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.keys.load().is_some()
    }

    async fn load(&self) -> Result<Option<Duration>, BoxError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let (discovery, _) = get_json(&format!("{issuer}/.well-known/openid-configuration"), &self.tls).await?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(format!(
                "discovery names issuer {:?}, not {:?}",
                discovery.get("issuer"),
                self.config.issuer
            )
            .into());
        }
        let text = |k: &str| discovery.get(k).and_then(Value::as_str).map(str::to_string);
        self.endpoints.store(Some(Arc::new(Endpoints {
            authorization: text("authorization_endpoint"),
            token: text("token_endpoint"),
            end_session: text("end_session_endpoint"),
            claims_parameter: discovery.get("claims_parameter_supported") == Some(&Value::Bool(true)),
        })));
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery has no jwks_uri")?;
        let (jwks, age) = get_json(jwks_uri, &self.tls).await?;
        let set = KeySet::from_jwks(jwks.to_string().as_bytes())?;
        if set.is_empty() {
            return Err("the key set has no usable signing key".into());
        }
        self.metrics.keys.set(set.len() as i64);
        self.keys.store(Some(Arc::new(set)));
        Ok(age)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Arc<Claims>> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(digest)?;
        (now <= c.expires.saturating_add(self.config.leeway_secs)).then(|| c.clone())
    }

    fn remember(&self, digest: [u8; 32], claims: Arc<Claims>, now: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAP {
                let leeway = self.config.leeway_secs;
                cache.retain(|_, c| now <= c.expires.saturating_add(leeway));
                if cache.len() >= CACHE_CAP {
                    cache.clear();
                }
            }
            cache.insert(digest, claims);
        }
    }

    /// Asks for a refresh now, unless one was forced within `min_refresh_interval`. Returns
    /// whether it was asked.
    fn force_refresh(&self) -> bool {
        let Ok(mut last) = self.last_forced.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < self.config.min_refresh_interval) {
            self.metrics.forced_limited.inc();
            return false;
        }
        *last = Some(Instant::now());
        self.metrics.forced.inc();
        self.wake.notify_one();
        true
    }

    /// Counts an authentication outcome.
    pub fn count(&self, outcome: &'static str, reason: &'static str) {
        self.metrics
            .family
            .auth_outcomes
            .get_or_create(&AuthLabels {
                provider: self.metrics.name.clone(),
                outcome,
                reason,
            })
            .inc();
    }

    /// Verifies a bearer token. A token naming an unknown key id waits (at most 3 s) for one
    /// forced key refresh and is checked again.
    pub async fn authenticate(&self, token: &str) -> Result<(Arc<Claims>, [u8; 32]), AuthError> {
        let now = unix_now();
        let digest: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        if let Some(c) = self.cached(&digest, now) {
            self.count("ok", "cached");
            return Ok((c, digest));
        }
        match self.verify_with(token, &self.validation, now).await {
            Ok(claims) => {
                let claims = Arc::new(claims);
                self.remember(digest, claims.clone(), now);
                self.count("ok", "verified");
                Ok((claims, digest))
            }
            Err(e) => {
                match &e {
                    AuthError::Unavailable(_) => self.count("unavailable", "keys_not_loaded"),
                    AuthError::Invalid(e) => self.count("invalid", e.reason()),
                }
                Err(e)
            }
        }
    }

    /// Verifies a token against `validation` with the current keys. A token naming an unknown
    /// key id waits (at most 3 s) for one forced key refresh and is checked again.
    async fn verify_with(&self, token: &str, validation: &Validation, now: u64) -> Result<Claims, AuthError> {
        let Some(keys) = self.keys.load_full() else {
            return Err(AuthError::Unavailable(self.config.name.clone()));
        };
        let mut result = jwt::verify(token, &keys, validation, now);
        if matches!(result, Err(JwtError::UnknownKey(_))) {
            let mut loaded = self.loaded.subscribe();
            if self.force_refresh()
                && tokio::time::timeout(Duration::from_secs(3), loaded.changed())
                    .await
                    .is_ok()
            {
                if let Some(keys) = self.keys.load_full() {
                    result = jwt::verify(token, &keys, validation, now);
                }
            }
        }
        Ok(result?)
    }

    /// Verifies an ID token or a logout token issued to the login client (signature, `iss`,
    /// `aud`, `exp`, `nbf`, `iat`); the caller checks what is particular to each.
    pub async fn verify_client_token(&self, token: &str) -> Result<Claims, AuthError> {
        let Some(v) = &self.id_validation else {
            return Err(AuthError::Invalid(JwtError::WrongAudience));
        };
        self.verify_with(token, v, unix_now()).await
    }

    /// The endpoints discovery named, once loaded.
    pub fn endpoints(&self) -> Option<Arc<Endpoints>> {
        self.endpoints.load_full()
    }

    /// Exchanges an authorization code (with its PKCE verifier) at the token endpoint and
    /// returns the ID token.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str, verifier: &str) -> Result<String, BoxError> {
        let login = self.config.login.as_ref().ok_or("no login client")?;
        let endpoints = self.endpoints().ok_or("provider metadata not loaded")?;
        let token_url = endpoints.token.as_deref().ok_or("discovery names no token_endpoint")?;
        // RFC 6749 §2.3.1: id and secret are form-encoded before the Basic encoding.
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!(
                "{}:{}",
                enc(&login.client_id),
                enc(self.login_secret.as_deref().unwrap_or(""))
            ),
        );
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        let req = http::Request::post("/")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        let (doc, _) = fetch_json(token_url, req, Bytes::from(form), &self.tls).await?;
        doc.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "the token response has no id_token".into())
    }
}

async fn refresh_loop(weak: Weak<Provider>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(p) = weak.upgrade() else { return };
        let wait = match p.load().await {
            Ok(age) => {
                p.metrics.refresh_ok.inc();
                p.metrics.ready.set(1);
                backoff = Duration::from_secs(1);
                let age = age.unwrap_or(Duration::from_secs(375));
                (age * 4 / 5).clamp(Duration::from_secs(30), Duration::from_secs(3600))
            }
            Err(e) => {
                p.metrics.refresh_failed.inc();
                tracing::warn!(provider = %p.config.name, issuer = %p.config.issuer, error = %e, retry_in_ms = backoff.as_millis() as u64, "identity provider keys could not be loaded");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                w
            }
        };
        p.loaded.send_modify(|g| *g += 1);
        // Wait without holding the provider, so a dropped provider stops its task.
        let wake = p.wake.clone();
        drop(p);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}
