//! Browser sessions: kept by the gateway, named by an encrypted cookie.
//!
//! - The cookie carries 32 random bytes sealed with AES-256-GCM under the gateway's cookie key
//!   (the cookie name is the associated data), so a cookie cannot be forged, altered, or moved to
//!   another cookie name, and reveals nothing. A cookie sealed under another key does not open.
//! - The store is keyed by the SHA-256 of those bytes: a dump of the store gives no usable
//!   cookie. The hex of that key is the session's public handle (logs, admin API).
//! - [`SessionStore`] is the seam for shared stores; [`MemoryStore`] is the embedded default,
//!   bounded (least recently seen sessions are evicted first) and purged of expired sessions.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::jwt::Claims;

/// Longest cookie value accepted before any decoding.
pub const MAX_COOKIE_VALUE: usize = 512;

/// What the store is keyed by: the SHA-256 of the cookie's secret.
pub type SessionKey = [u8; 32];

/// The cookie encryption key.
pub struct CookieKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// Fills `buf` from the system's secure random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system generator does not fail on Linux; if it ever did, a zeroed buffer would be a
    // disaster, so stop instead.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buf).expect("the system random generator works");
    buf
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A session's short handle for events: the first 8 bytes of its store key.
pub fn handle(key: &SessionKey) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    u64::from_be_bytes(b)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === impl CookieKey ===

impl CookieKey {
    /// A fresh random key.
    pub fn random() -> CookieKey {
        Self::from_bytes(&random_bytes::<32>()).unwrap_or_else(|| unreachable!("32 bytes is an AES-256 key"))
    }

    fn from_bytes(bytes: &[u8]) -> Option<CookieKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(CookieKey {
            key: LessSafeKey::new(key),
        })
    }

    /// The key from a key file's text: 32 bytes in base64.
    pub fn from_base64(text: &str) -> Result<CookieKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("the key is not base64: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "the key has {} bytes; 32 random bytes are required (openssl rand -base64 32)",
                bytes.len()
            ));
        }
        Self::from_bytes(&bytes).ok_or_else(|| "the key is not usable".to_string())
    }

    /// Seals `plain` for the cookie `name`: base64url of nonce, ciphertext and tag.
    pub fn seal(&self, name: &str, plain: &[u8]) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plain.to_vec();
        let sealed = self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .is_ok();
        if !sealed {
            return String::new(); // opens to nothing
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a value sealed by [`CookieKey::seal`] for `name`; `None` if it was altered, sealed
    /// under another key or for another name, or is not a sealed value at all.
    pub fn open(&self, name: &str, value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, living `max_age`
/// (zero deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> http::HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        max_age.as_secs()
    );
    http::HeaderValue::from_str(&text).unwrap_or_else(|_| http::HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Provider name.
    pub provider: String,
    /// `sub`.
    pub subject: String,
    /// The provider's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// `acr` of the last authentication.
    pub acr: Option<String>,
    /// `amr` of the last authentication.
    pub amr: Vec<String>,
    /// `auth_time` of the last authentication.
    pub auth_time: Option<u64>,
    /// Unix time the session began.
    pub created: u64,
    /// Unix time of its last request.
    pub last_seen: u64,
    /// Client address at sign-in.
    pub client_addr: IpAddr,
    /// User agent at sign-in (at most 256 bytes).
    pub user_agent: String,
    /// The ID token's claims: what route requirements and upstream headers read.
    pub claims: Arc<Claims>,
    /// The ID token, as `id_token_hint` for logout at the provider.
    pub id_token: String,
}

/// Session lifetime limits.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Ends after this long without a request.
    pub idle: Duration,
    /// Ends this long after sign-in.
    pub absolute: Duration,
}

// === impl Session ===

impl Session {
    /// Why the session has ended at `now`, if it has: `idle` or `absolute`.
    pub fn expired(&self, now: u64, life: Lifetime) -> Option<&'static str> {
        if now > self.created.saturating_add(life.absolute.as_secs()) {
            Some("absolute")
        } else if now > self.last_seen.saturating_add(life.idle.as_secs()) {
            Some("idle")
        } else {
            None
        }
    }

    /// A JSON summary for the admin API (no token, no cookie).
    pub fn summary(&self, key: &SessionKey) -> serde_json::Value {
        serde_json::json!({
            "session": hex(key),
            "provider": self.provider,
            "subject": self.subject,
            "acr": self.acr,
            "amr": self.amr,
            "auth_time": self.auth_time,
            "created": self.created,
            "last_seen": self.last_seen,
            "client_addr": self.client_addr.to_string(),
            "user_agent": self.user_agent,
        })
    }
}

/// Which sessions to remove.
#[derive(Debug, Clone)]
pub enum Selector {
    /// One session.
    Key(SessionKey),
    /// Every session of a subject, whatever the provider.
    Subject(String),
    /// Sessions of a provider with this provider session id (`sid`).
    ProviderSid {
        /// Provider name.
        provider: String,
        /// `sid`.
        sid: String,
    },
    /// Sessions of a provider for this subject.
    ProviderSubject {
        /// Provider name.
        provider: String,
        /// `sub`.
        subject: String,
    },
}

// === impl Selector ===

impl Selector {
    fn matches(&self, key: &SessionKey, s: &Session) -> bool {
        match self {
            Selector::Key(k) => k == key,
            Selector::Subject(sub) => &s.subject == sub,
            Selector::ProviderSid { provider, sid } => &s.provider == provider && s.sid.as_ref() == Some(sid),
            Selector::ProviderSubject { provider, subject } => &s.provider == provider && &s.subject == subject,
        }
    }
}

/// Why a store operation failed (a shared store may be unreachable).
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// What store operations return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where sessions live. Implementations must be safe to share between instances of the gateway
/// when they say so; the embedded [`MemoryStore`] is per process.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The session under `key`.
    fn load(&self, key: SessionKey) -> StoreFuture<'_, Option<Session>>;
    /// Stores (or replaces) a session; the store may evict others to stay within `max`.
    /// Returns how many were evicted.
    fn save(&self, key: SessionKey, session: Session, max: usize, life: Lifetime) -> StoreFuture<'_, usize>;
    /// Records a request at `now`.
    fn touch(&self, key: SessionKey, now: u64) -> StoreFuture<'_, ()>;
    /// Removes the selected sessions and returns them with their keys.
    fn remove(&self, which: Selector) -> StoreFuture<'_, Vec<(SessionKey, Session)>>;
    /// Removes the sessions ended at `now` and returns them with why each ended (a store whose
    /// entries expire by themselves may return nothing).
    fn purge(&self, now: u64, life: Lifetime) -> StoreFuture<'_, Vec<(SessionKey, &'static str)>>;
    /// Up to `limit` sessions, most recently seen first.
    fn list(&self, limit: usize) -> StoreFuture<'_, Vec<(SessionKey, Session)>>;
    /// Sessions stored now.
    fn len(&self) -> usize;
    /// Whether none is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sessions in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<SessionKey, Session>>,
}

fn ready<T: Send + 'static>(v: T) -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Ok(v)))
}

fn poisoned<T: Send + 'static>() -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Err(StoreError("lock poisoned".into()))))
}

impl SessionStore for MemoryStore {
    fn load(&self, key: SessionKey) -> StoreFuture<'_, Option<Session>> {
        match self.map.lock() {
            Ok(m) => ready(m.get(&key).cloned()),
            Err(_) => poisoned(),
        }
    }

    fn save(&self, key: SessionKey, session: Session, max: usize, life: Lifetime) -> StoreFuture<'_, usize> {
        let Ok(mut m) = self.map.lock() else { return poisoned() };
        let mut evicted = 0;
        if m.len() >= max && !m.contains_key(&key) {
            let now = session.last_seen;
            m.retain(|_, s| s.expired(now, life).is_none());
            while m.len() >= max.max(1) {
                let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) else {
                    break;
                };
                m.remove(&oldest);
                evicted += 1;
            }
        }
        m.insert(key, session);
        ready(evicted)
    }

    fn touch(&self, key: SessionKey, now: u64) -> StoreFuture<'_, ()> {
        let Ok(mut m) = self.map.lock() else { return poisoned() };
        if let Some(s) = m.get_mut(&key) {
            s.last_seen = s.last_seen.max(now);
        }
        ready(())
    }

    fn remove(&self, which: Selector) -> StoreFuture<'_, Vec<(SessionKey, Session)>> {
        let Ok(mut m) = self.map.lock() else { return poisoned() };
        let out = match which {
            Selector::Key(k) => m.remove(&k).map(|s| (k, s)).into_iter().collect(),
            other => {
                let keys: Vec<SessionKey> = m.iter().filter(|(k, s)| other.matches(k, s)).map(|(k, _)| *k).collect();
                keys.into_iter().filter_map(|k| m.remove(&k).map(|s| (k, s))).collect()
            }
        };
        ready(out)
    }

    fn purge(&self, now: u64, life: Lifetime) -> StoreFuture<'_, Vec<(SessionKey, &'static str)>> {
        let Ok(mut m) = self.map.lock() else { return poisoned() };
        let mut ended = Vec::new();
        m.retain(|k, s| match s.expired(now, life) {
            Some(why) => {
                ended.push((*k, why));
                false
            }
            None => true,
        });
        ready(ended)
    }

    fn list(&self, limit: usize) -> StoreFuture<'_, Vec<(SessionKey, Session)>> {
        let Ok(m) = self.map.lock() else { return poisoned() };
        let mut all: Vec<(SessionKey, Session)> = m.iter().map(|(k, s)| (*k, s.clone())).collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.1.last_seen));
        all.truncate(limit);
        ready(all)
    }

    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_open_only_unaltered_under_their_key_and_name() {
        let key = CookieKey::random();
        let v = key.seal("sess", b"secret bytes");
        assert_eq!(key.open("sess", &v).as_deref(), Some(&b"secret bytes"[..]));
        assert_ne!(key.seal("sess", b"secret bytes"), v, "a fresh nonce every time");
        // Another name, another key, altered bytes, junk, oversize.
        assert_eq!(key.open("other", &v), None);
        assert_eq!(CookieKey::random().open("sess", &v), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap_or_default();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(
                key.open("sess", &URL_SAFE_NO_PAD.encode(&raw)),
                None,
                "byte {i} flipped"
            );
            raw[i] ^= 1;
        }
        for junk in ["", "!!!", "AAAA", &"A".repeat(MAX_COOKIE_VALUE + 1)] {
            assert_eq!(key.open("sess", junk), None);
        }
        assert!(CookieKey::from_base64("c2hvcnQ=").is_err());
        assert!(CookieKey::from_base64("not base64!").is_err());
        let k = STANDARD.encode([7u8; 32]);
        let a = CookieKey::from_base64(&k).expect("32 bytes");
        let b = CookieKey::from_base64(&format!("{k}\n")).expect("trailing newline");
        assert_eq!(b.open("n", &a.seal("n", b"x")).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn cookie_header_parsing() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, http::HeaderValue::from_static("a=1; sess=xyz"));
        h.append(http::header::COOKIE, http::HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "sess"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "ses"), None);
        let c = set_cookie("sess", "v", Duration::from_secs(60));
        assert_eq!(c, "sess=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax");
    }

    fn session(subject: &str, sid: &str, last_seen: u64) -> Session {
        Session {
            provider: "idp".into(),
            subject: subject.into(),
            sid: Some(sid.into()),
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            created: last_seen,
            last_seen,
            client_addr: IpAddr::from([127, 0, 0, 1]),
            user_agent: String::new(),
            claims: Arc::new(Claims {
                subject: Some(subject.into()),
                expires: u64::MAX,
                issued_at: None,
                all: Default::default(),
            }),
            id_token: String::new(),
        }
    }

    #[tokio::test]
    async fn memory_store_is_bounded_and_removes_by_selector() -> Result<(), StoreError> {
        let store = MemoryStore::default();
        let life = Lifetime {
            idle: Duration::from_secs(100),
            absolute: Duration::from_secs(1000),
        };
        for i in 0..5u8 {
            store
                .save([i; 32], session("alice", &format!("s{i}"), 10 + u64::from(i)), 3, life)
                .await?;
        }
        assert_eq!(store.len(), 3, "capped");
        assert!(
            store.load([0; 32]).await?.is_none(),
            "least recently seen evicted first"
        );
        store.touch([2; 32], 50).await?;
        assert_eq!(store.list(1).await?[0].0, [2; 32]);
        store.save([9; 32], session("bob", "b", 150), 10, life).await?;
        let gone = store
            .remove(Selector::ProviderSid {
                provider: "idp".into(),
                sid: "s3".into(),
            })
            .await?;
        assert_eq!(gone.len(), 1);
        assert_eq!(store.remove(Selector::Subject("alice".into())).await?.len(), 2);
        assert_eq!(store.len(), 1);
        // Expired sessions go before any live one is evicted.
        let stale = session("carol", "c", 0);
        assert_eq!(stale.expired(200, life), Some("idle"));
        assert_eq!(session("x", "x", 0).expired(1001, life), Some("absolute"));
        store.save([8; 32], stale.clone(), 10, life).await?;
        assert_eq!(store.purge(200, life).await?, vec![([8; 32], "idle")]);
        store.save([8; 32], stale, 10, life).await?;
        assert_eq!(store.save([7; 32], session("dan", "d", 200), 2, life).await?, 0);
        assert!(store.load([9; 32]).await?.is_some());
        Ok(())
    }
}
