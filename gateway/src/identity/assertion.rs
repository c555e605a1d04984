//! The identity assertion sent to upstreams: a short-lived JWT signed with the gateway's own
//! ES256 key, so an upstream can verify who the caller is instead of trusting a header.
//!
//! The key is made at start and rotated every `rotate_every`; the previous key stays in the
//! JWKS (served on the admin listener at `/.well-known/jwks.json`) so assertions signed just
//! before a rotation still verify. An assertion is cached per bearer token (by digest) for half
//! its lifetime, so a repeated token costs a lookup, not a signature.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::time::Instant;

use super::jwt::Claims;

const CACHE_CAP: usize = 10_000;

/// Cached assertions: (token digest, audience) → (assertion, reuse it until this Unix time).
type Cache = HashMap<([u8; 32], String), (String, u64)>;

struct SigningKey {
    kid: String,
    key: EcdsaKeyPair,
    made: Instant,
}

struct Keys {
    current: SigningKey,
    previous: Option<SigningKey>,
    serial: u64,
}

/// Signs identity assertions.
pub struct Signer {
    issuer: String,
    ttl: Duration,
    rotate_every: Duration,
    keys: Mutex<Keys>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn new_key(serial: u64) -> Option<SigningKey> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(SigningKey {
        kid: format!("gw-{stamp}-{serial}"),
        key,
        made: Instant::now(),
    })
}

// === impl Signer ===

impl Signer {
    /// A signer with a fresh key; `None` if no key can be made.
    pub fn new(issuer: String, ttl: Duration, rotate_every: Duration) -> Option<Signer> {
        Some(Signer {
            issuer,
            ttl,
            rotate_every,
            keys: Mutex::new(Keys {
                current: new_key(0)?,
                previous: None,
                serial: 0,
            }),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The JWKS with the current and previous public keys.
    pub fn jwks(&self) -> serde_json::Value {
        let Ok(keys) = self.keys.lock() else {
            return serde_json::json!({ "keys": [] });
        };
        let jwk = |k: &SigningKey| super::jwt::es256_jwk(&k.key, &k.kid);
        let mut list = vec![jwk(&keys.current)];
        list.extend(keys.previous.as_ref().map(jwk));
        serde_json::json!({ "keys": list })
    }

    /// The assertion for a caller verified with the token of `digest`, for `audience`.
    pub fn assertion(&self, digest: &[u8; 32], claims: &Claims, audience: &str, now: u64) -> Option<String> {
        let key = (*digest, audience.to_string());
        if let Ok(cache) = self.cache.lock() {
            if let Some((a, fresh_until)) = cache.get(&key) {
                if now < *fresh_until {
                    return Some(a.clone());
                }
            }
        }
        let exp = now + self.ttl.as_secs();
        let mut body = serde_json::json!({ "iss": self.issuer, "aud": audience, "iat": now, "exp": exp });
        if let Some(s) = &claims.subject {
            body["sub"] = serde_json::json!(s);
        }
        for name in ["scope", "acr", "amr", "auth_time"] {
            if let Some(v) = claims.all.get(name) {
                body[name] = v.clone();
            }
        }
        let token = {
            let mut keys = self.keys.lock().ok()?;
            if keys.current.made.elapsed() >= self.rotate_every {
                keys.serial += 1;
                if let Some(next) = new_key(keys.serial) {
                    let old = std::mem::replace(&mut keys.current, next);
                    keys.previous = Some(old);
                }
            }
            let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": keys.current.kid });
            super::jwt::sign_es256(&keys.current.key, &header, &body)?
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAP {
                cache.retain(|_, (_, until)| now < *until);
                if cache.len() >= CACHE_CAP {
                    cache.clear();
                }
            }
            cache.insert(key, (token.clone(), now + self.ttl.as_secs() / 2));
        }
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwt::{verify, Alg, KeySet, Validation};

    #[test]
    fn assertions_verify_with_the_published_keys_across_a_rotation() {
        let signer = Signer::new("gateway".into(), Duration::from_secs(60), Duration::from_millis(0)).expect("signer");
        let claims = Claims {
            subject: Some("alice".into()),
            expires: u64::MAX,
            issued_at: None,
            all: serde_json::json!({ "sub": "alice", "scope": "read", "acr": "urn:mfa" })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let v = Validation {
            issuer: "gateway".into(),
            audiences: vec!["orders".into()],
            algorithms: vec![Alg::ES256],
            leeway_secs: 0,
            require_at_jwt: false,
            max_token_bytes: 8192,
        };
        let first = signer.assertion(&[1; 32], &claims, "orders", now).expect("assertion");
        // rotate_every is zero: the next signature rotates; both keys are published.
        let second = signer.assertion(&[2; 32], &claims, "orders", now).expect("assertion");
        let keys = KeySet::from_jwks(signer.jwks().to_string().as_bytes()).expect("jwks");
        assert_eq!(keys.len(), 2);
        for a in [&first, &second] {
            let c = verify(a, &keys, &v, now).expect("verifies");
            assert_eq!(c.subject.as_deref(), Some("alice"));
            assert_eq!(c.all["acr"], "urn:mfa");
        }
        // A cached assertion is returned for the same token and audience.
        assert_eq!(
            signer.assertion(&[2; 32], &claims, "orders", now).as_ref(),
            Some(&second)
        );
        let other = signer.assertion(&[2; 32], &claims, "billing", now).expect("assertion");
        assert_ne!(other, second);
    }
}
