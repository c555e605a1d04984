//! JWT (RFC 7519) verification following the JWT best current practices (RFC 8725).
//!
//! - Only the algorithms a provider allows are accepted; `none` and every HMAC algorithm are
//!   refused outright, so a token "signed" with a provider's public key as an HMAC secret
//!   cannot pass.
//! - A key is used only with the algorithm family it belongs to (RSA keys for `RS*`/`PS*`, P-256
//!   for `ES256`, P-384 for `ES384`, Ed25519 for `EdDSA`), and only with its own `alg` when the
//!   JWK names one.
//! - Keys come only from the provider's key set: the `jku`, `x5u`, `jwk` and `x5c` headers are
//!   never used.
//! - A `crit` header is refused: no extension is understood.
//! - `exp` is required; `nbf` and `iat` are checked with leeway; `iss` must match exactly; `aud`
//!   must contain an accepted audience; `typ` can be required to be `at+jwt` (RFC 9068).
//! - Token size is bounded before anything is decoded.

use std::collections::HashMap;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Signature algorithms that may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

const RSA_ALGS: [Alg; 6] = [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512];

// === impl Alg ===

impl Alg {
    /// Parses a JOSE algorithm name.
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }
}

/// One verification key from a key set, parsed once for each algorithm it may verify.
pub struct Key {
    kid: Option<String>,
    verifiers: Vec<(Alg, ParsedPublicKey)>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algs", &self.verifiers.iter().map(|(a, _)| *a).collect::<Vec<_>>())
            .finish()
    }
}

/// A provider's verification keys (a parsed JWKS document).
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
    /// Keys in the document that were skipped (unsupported type, private or symmetric, malformed).
    pub skipped: usize,
}

/// Why a key set could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document: {0}")]
    Malformed(&'static str),
    /// Too many keys.
    #[error("the key set has {0} keys, more than the 64 accepted")]
    TooManyKeys(usize),
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn parse_jwk(jwk: &Map<String, Value>) -> Option<Key> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    // Only signature keys; private and symmetric material is never accepted.
    if s("use").is_some_and(|u| u != "sig") || jwk.contains_key("d") || s("kty") == Some("oct") {
        return None;
    }
    let declared = match s("alg") {
        Some(a) => Some(Alg::parse(a)?),
        None => None,
    };
    let allowed = |a: Alg| declared.is_none_or(|d| d == a);
    let mut verifiers = Vec::new();
    match (s("kty")?, s("crv")) {
        ("RSA", _) => {
            let (n, e) = (b64(s("n")?)?, b64(s("e")?)?);
            let components = RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            for a in RSA_ALGS.into_iter().filter(|a| allowed(*a)) {
                let params = a.rsa_params()?;
                verifiers.push((a, components.to_parsed_public_key(params).ok()?));
            }
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (b64(s("x")?)?, b64(s("y")?)?);
            let (alg, len, verify): (Alg, usize, &'static dyn signature::VerificationAlgorithm) = if crv == "P-256" {
                (Alg::ES256, 32, &signature::ECDSA_P256_SHA256_FIXED)
            } else {
                (Alg::ES384, 48, &signature::ECDSA_P384_SHA384_FIXED)
            };
            if x.len() != len || y.len() != len || !allowed(alg) {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            verifiers.push((alg, ParsedPublicKey::new(verify, point).ok()?));
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(s("x")?)?;
            if x.len() != 32 || !allowed(Alg::EdDSA) {
                return None;
            }
            verifiers.push((Alg::EdDSA, ParsedPublicKey::new(&signature::ED25519, x).ok()?));
        }
        _ => return None,
    }
    (!verifiers.is_empty()).then(|| Key {
        kid: s("kid").map(str::to_string),
        verifiers,
    })
}

// === impl KeySet ===

impl KeySet {
    /// Parses a JWKS document. Keys that cannot be used are skipped and counted.
    pub fn from_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::Malformed("invalid JSON"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Malformed("no `keys` array"))?;
        if keys.len() > 64 {
            return Err(JwksError::TooManyKeys(keys.len()));
        }
        let mut set = KeySet::default();
        for k in keys {
            match k.as_object().and_then(parse_jwk) {
                Some(key) => {
                    if let Some(kid) = &key.kid {
                        set.by_kid.entry(kid.clone()).or_default().push(set.keys.len());
                    }
                    set.keys.push(key);
                }
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// Usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this id is present.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// What a token must satisfy for one provider.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted audiences; the token's `aud` must contain one (empty: `aud` not checked).
    pub audiences: Vec<String>,
    /// Allowed algorithms.
    pub algorithms: Vec<Alg>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Require `typ: at+jwt` (RFC 9068 access tokens).
    pub require_at_jwt: bool,
    /// Largest accepted token in bytes.
    pub max_token_bytes: usize,
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`, when present.
    pub subject: Option<String>,
    /// `exp`.
    pub expires: u64,
    /// `iat`, when present.
    pub issued_at: Option<u64>,
    /// Every claim.
    pub all: Map<String, Value>,
}

/// Why a token was refused. Each has a bounded `reason` for metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Larger than the limit.
    #[error("token larger than {0} bytes")]
    TooLarge(usize),
    /// Not a compact JWS of three base64url parts with JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not one this provider allows (including `none` and HMAC).
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// A `crit` header names extensions.
    #[error("critical header extensions are not supported: {0}")]
    Critical(String),
    /// `typ` is not `at+jwt` where that is required.
    #[error("token type {0:?} is not at+jwt")]
    WrongType(String),
    /// No key with the token's `kid` (a key set refresh may find it).
    #[error("no key with id {0:?}")]
    UnknownKey(String),
    /// No key verifies the signature.
    #[error("signature does not verify")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("claim `{0}` is missing or invalid")]
    Claim(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` differs.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` contains no accepted audience.
    #[error("wrong audience")]
    WrongAudience,
}

// === impl JwtError ===

impl JwtError {
    /// Bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::TooLarge(_) => "too_large",
            JwtError::Malformed(_) => "malformed",
            JwtError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            JwtError::Critical(_) => "critical_header",
            JwtError::WrongType(_) => "wrong_type",
            JwtError::UnknownKey(_) => "unknown_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Claim(_) => "invalid_claim",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
        }
    }
}

fn json_part(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed("invalid base64url"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed("not a JSON object")),
    }
}

fn number(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(JwtError::Claim(name)),
    }
}

/// Verifies a compact JWS token and its claims at `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, v: &Validation, now: u64) -> Result<Claims, JwtError> {
    if token.len() > v.max_token_bytes {
        return Err(JwtError::TooLarge(v.max_token_bytes));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header = json_part(h)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed("no `alg` header"))?;
    let alg = Alg::parse(alg_name)
        .filter(|a| v.algorithms.contains(a))
        .ok_or_else(|| JwtError::AlgorithmNotAllowed(alg_name.to_string()))?;
    if let Some(crit) = header.get("crit") {
        return Err(JwtError::Critical(crit.to_string()));
    }
    if v.require_at_jwt {
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err(JwtError::WrongType(typ.to_string()));
        }
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| JwtError::Malformed("invalid base64url"))?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];

    // Candidate keys: those with the token's kid, or every key when it names none.
    let candidates: Vec<&Key> = match header.get("kid").and_then(Value::as_str) {
        Some(kid) => match keys.by_kid.get(kid) {
            Some(idx) => idx.iter().map(|&i| &keys.keys[i]).collect(),
            None => return Err(JwtError::UnknownKey(kid.to_string())),
        },
        None => keys.keys.iter().collect(),
    };
    let verified = candidates
        .iter()
        .flat_map(|k| k.verifiers.iter())
        .filter(|(a, _)| *a == alg)
        .any(|(_, key)| key.verify_sig(signed, &signature).is_ok());
    if !verified {
        return Err(JwtError::BadSignature);
    }

    let claims = json_part(p)?;
    let expires = number(&claims, "exp")?.ok_or(JwtError::Claim("exp"))?;
    if now > expires.saturating_add(v.leeway_secs) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = number(&claims, "nbf")? {
        if now.saturating_add(v.leeway_secs) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    let issued_at = number(&claims, "iat")?;
    if issued_at.is_some_and(|iat| iat > now.saturating_add(v.leeway_secs)) {
        return Err(JwtError::IssuedInFuture);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(v.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    if !v.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => v.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| v.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(JwtError::WrongAudience);
        }
    }
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JwtError::Claim("sub")),
    };
    Ok(Claims {
        subject,
        expires,
        issued_at,
        all: claims,
    })
}

/// The public JWK (`use: sig`, `alg: ES256`) of a P-256 signing key.
pub fn es256_jwk(key: &signature::EcdsaKeyPair, kid: &str) -> Value {
    use aws_lc_rs::signature::KeyPair as _;
    let p = key.public_key().as_ref();
    let (x, y) = p[1..].split_at(p.len() / 2);
    serde_json::json!({ "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) })
}

/// Signs `claims` as a compact JWS with a P-256 key; `header` must say `"alg": "ES256"`.
pub fn sign_es256(key: &signature::EcdsaKeyPair, header: &Value, claims: &Value) -> Option<String> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).ok()?;
    Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

#[cfg(test)]
mod tests;
