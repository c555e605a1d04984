//! Token verification with keys generated at run time, and every attack RFC 8725 warns about.

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example";

struct Keys {
    rsa: RsaKeyPair,
    p256: EcdsaKeyPair,
    p384: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    attacker: EcdsaKeyPair,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa"),
        p256: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256"),
        p384: EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).expect("p384"),
        ed: Ed25519KeyPair::generate().expect("ed25519"),
        attacker: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("p256"),
    })
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn ec_jwk(kid: &str, crv: &str, point: &[u8]) -> Value {
    let half = (point.len() - 1) / 2;
    json!({ "kty": "EC", "crv": crv, "kid": kid, "use": "sig", "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]) })
}

fn rsa_jwk(kid: &str, alg: Option<&str>) -> Value {
    let public = keys().rsa.public_key();
    let mut v = json!({
        "kty": "RSA", "kid": kid,
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    if let Some(a) = alg {
        v["alg"] = json!(a);
    }
    v
}

fn jwks() -> Value {
    let k = keys();
    json!({ "keys": [
        rsa_jwk("rsa-1", None),
        ec_jwk("ec-256", "P-256", k.p256.public_key().as_ref()),
        ec_jwk("ec-384", "P-384", k.p384.public_key().as_ref()),
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(k.ed.public_key().as_ref()) },
        { "kty": "oct", "kid": "secret", "k": b64(b"shared secret") },
        { "kty": "EC", "crv": "P-521", "kid": "unsupported", "x": "AA", "y": "AA" },
    ]})
}

fn key_set() -> KeySet {
    KeySet::from_jwks(jwks().to_string().as_bytes()).expect("jwks")
}

fn validation() -> Validation {
    Validation {
        issuer: ISS.into(),
        audiences: vec!["api".into()],
        algorithms: vec![Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA],
        leeway_secs: 30,
        require_at_jwt: false,
        max_token_bytes: 8192,
    }
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": ["api", "other"], "sub": "alice", "exp": NOW + 300, "iat": NOW - 10 })
}

/// Signs `header.payload` with the named method.
fn sign(header: &Value, payload: &Value, how: &str) -> String {
    let k = keys();
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let rng = SystemRandom::new();
    let sig: Vec<u8> = match how {
        "RS256" | "PS256" => {
            let enc: &'static dyn signature::RsaEncoding = if how == "RS256" {
                &signature::RSA_PKCS1_SHA256
            } else {
                &signature::RSA_PSS_SHA256
            };
            let mut out = vec![0u8; k.rsa.public_modulus_len()];
            k.rsa.sign(enc, &rng, input.as_bytes(), &mut out).expect("sign");
            out
        }
        "ES256" => k.p256.sign(&rng, input.as_bytes()).expect("sign").as_ref().to_vec(),
        "ES384" => k.p384.sign(&rng, input.as_bytes()).expect("sign").as_ref().to_vec(),
        "EdDSA" => k.ed.sign(input.as_bytes()).as_ref().to_vec(),
        "attacker" => k.attacker.sign(&rng, input.as_bytes()).expect("sign").as_ref().to_vec(),
        "none" => Vec::new(),
        _ => panic!("unknown signer {how}"),
    };
    format!("{input}.{}", b64(&sig))
}

fn token(alg: &str, kid: &str) -> String {
    sign(&json!({ "alg": alg, "kid": kid, "typ": "at+jwt" }), &claims(), alg)
}

#[test]
fn every_supported_algorithm_verifies() {
    let set = key_set();
    assert_eq!(set.len(), 4);
    assert_eq!(set.skipped, 2, "the symmetric and the P-521 key are skipped");
    for (alg, kid) in [
        ("RS256", "rsa-1"),
        ("PS256", "rsa-1"),
        ("ES256", "ec-256"),
        ("ES384", "ec-384"),
        ("EdDSA", "ed-1"),
    ] {
        let c = verify(&token(alg, kid), &set, &validation(), NOW).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(c.subject.as_deref(), Some("alice"));
        assert_eq!(c.expires, NOW + 300);
    }
    // Without a kid, the right key is found among all of them.
    let t = sign(&json!({ "alg": "ES256" }), &claims(), "ES256");
    assert!(verify(&t, &set, &validation(), NOW).is_ok());
}

#[test]
fn alg_none_is_refused() {
    let t = sign(&json!({ "alg": "none" }), &claims(), "none");
    assert_eq!(
        verify(&t, &key_set(), &validation(), NOW),
        Err(JwtError::AlgorithmNotAllowed("none".into()))
    );
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    // The classic confusion attack: sign HS256 using the provider's RSA public key bytes.
    let public = keys().rsa.public_key().as_ref().to_vec();
    let input = format!(
        "{}.{}",
        b64(json!({ "alg": "HS256", "kid": "rsa-1" }).to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public),
        input.as_bytes(),
    );
    let t = format!("{input}.{}", b64(tag.as_ref()));
    assert_eq!(
        verify(&t, &key_set(), &validation(), NOW),
        Err(JwtError::AlgorithmNotAllowed("HS256".into()))
    );
}

#[test]
fn disallowed_algorithm_and_key_algorithm_mismatch() {
    let mut v = validation();
    v.algorithms = vec![Alg::ES256];
    assert_eq!(
        verify(&token("RS256", "rsa-1"), &key_set(), &v, NOW),
        Err(JwtError::AlgorithmNotAllowed("RS256".into()))
    );
    // An ES256 token naming the RSA key: the RSA key cannot verify ES256.
    let t = sign(&json!({ "alg": "ES256", "kid": "rsa-1" }), &claims(), "ES256");
    assert_eq!(verify(&t, &key_set(), &validation(), NOW), Err(JwtError::BadSignature));
    // A JWK that names its algorithm is used for that algorithm only.
    let set = KeySet::from_jwks(
        json!({ "keys": [rsa_jwk("rsa-1", Some("RS256"))] })
            .to_string()
            .as_bytes(),
    )
    .expect("jwks");
    assert!(verify(&token("RS256", "rsa-1"), &set, &validation(), NOW).is_ok());
    assert_eq!(
        verify(&token("PS256", "rsa-1"), &set, &validation(), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn time_claims() {
    let set = key_set();
    let v = validation();
    let with = |c: Value| sign(&json!({ "alg": "ES256", "kid": "ec-256" }), &c, "ES256");
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    assert_eq!(verify(&with(c.clone()), &set, &v, NOW), Err(JwtError::Expired));
    c["exp"] = json!(NOW - 29);
    assert!(verify(&with(c.clone()), &set, &v, NOW).is_ok(), "within the leeway");
    let mut c = claims();
    c["nbf"] = json!(NOW + 60);
    assert_eq!(verify(&with(c), &set, &v, NOW), Err(JwtError::NotYetValid));
    let mut c = claims();
    c["iat"] = json!(NOW + 60);
    assert_eq!(verify(&with(c), &set, &v, NOW), Err(JwtError::IssuedInFuture));
    let mut c = claims();
    c.as_object_mut().expect("object").remove("exp");
    assert_eq!(verify(&with(c), &set, &v, NOW), Err(JwtError::Claim("exp")));
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert_eq!(verify(&with(c), &set, &v, NOW), Err(JwtError::Claim("exp")));
}

#[test]
fn issuer_audience_and_type() {
    let set = key_set();
    let with = |c: Value| sign(&json!({ "alg": "ES256", "kid": "ec-256" }), &c, "ES256");
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(verify(&with(c), &set, &validation(), NOW), Err(JwtError::WrongIssuer));
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(verify(&with(c), &set, &validation(), NOW), Err(JwtError::WrongAudience));
    let mut c = claims();
    c["aud"] = json!("api");
    assert!(
        verify(&with(c), &set, &validation(), NOW).is_ok(),
        "a single string audience"
    );
    let mut v = validation();
    v.require_at_jwt = true;
    assert_eq!(
        verify(&with(claims()), &set, &v, NOW),
        Err(JwtError::WrongType(String::new()))
    );
    assert!(verify(&token("ES256", "ec-256"), &set, &v, NOW).is_ok());
}

#[test]
fn attacker_supplied_keys_are_never_used() {
    let attacker_jwk = ec_jwk("evil", "P-256", keys().attacker.public_key().as_ref());
    let set = key_set();
    for header in [
        json!({ "alg": "ES256", "kid": "ec-256", "jwk": attacker_jwk }),
        json!({ "alg": "ES256", "kid": "ec-256", "jku": "https://evil.example/jwks" }),
        json!({ "alg": "ES256", "kid": "ec-256", "x5u": "https://evil.example/cert" }),
        json!({ "alg": "ES256", "jwk": attacker_jwk }),
    ] {
        let t = sign(&header, &claims(), "attacker");
        assert_eq!(
            verify(&t, &set, &validation(), NOW),
            Err(JwtError::BadSignature),
            "{header}"
        );
    }
    let t = sign(
        &json!({ "alg": "ES256", "kid": "evil", "jwk": attacker_jwk }),
        &claims(),
        "attacker",
    );
    assert_eq!(
        verify(&t, &set, &validation(), NOW),
        Err(JwtError::UnknownKey("evil".into()))
    );
}

#[test]
fn critical_extensions_are_refused() {
    let t = sign(
        &json!({ "alg": "ES256", "kid": "ec-256", "crit": ["exp-ext"], "exp-ext": 1 }),
        &claims(),
        "ES256",
    );
    assert!(matches!(
        verify(&t, &key_set(), &validation(), NOW),
        Err(JwtError::Critical(_))
    ));
}

#[test]
fn oversized_and_malformed_tokens() {
    let set = key_set();
    let v = validation();
    let huge = "a".repeat(64 * 1024);
    assert_eq!(verify(&huge, &set, &v, NOW), Err(JwtError::TooLarge(8192)));
    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.!!!.sig",
        "bm90IGpzb24.e30.AA",
        "e30.bm90IGpzb24.AA",
        "W10.e30.AA",
    ] {
        let r = verify(bad, &set, &v, NOW);
        assert!(
            matches!(r, Err(JwtError::Malformed(_)) | Err(JwtError::AlgorithmNotAllowed(_))),
            "{bad}: {r:?}"
        );
    }
    // Broken base64 in the signature of an otherwise good token.
    let good = token("ES256", "ec-256");
    let broken = format!("{}!", &good[..good.len() - 1]);
    assert!(matches!(verify(&broken, &set, &v, NOW), Err(JwtError::Malformed(_))));
}

#[test]
fn a_modified_payload_fails_the_signature() {
    let good = token("RS256", "rsa-1");
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]);
    assert_eq!(
        verify(&forged, &key_set(), &validation(), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn a_token_of_another_provider_is_refused() {
    // Another provider's key set: the key id is unknown to it, and without a kid no key verifies.
    let other = KeySet::from_jwks(
        json!({ "keys": [ec_jwk("other", "P-256", keys().attacker.public_key().as_ref())] })
            .to_string()
            .as_bytes(),
    )
    .expect("jwks");
    assert_eq!(
        verify(&token("ES256", "ec-256"), &other, &validation(), NOW),
        Err(JwtError::UnknownKey("ec-256".into()))
    );
    let t = sign(&json!({ "alg": "ES256" }), &claims(), "ES256");
    assert_eq!(verify(&t, &other, &validation(), NOW), Err(JwtError::BadSignature));
}

#[test]
fn key_set_documents() {
    assert_eq!(
        KeySet::from_jwks(b"not json").err(),
        Some(JwksError::Malformed("invalid JSON"))
    );
    assert_eq!(
        KeySet::from_jwks(b"{}").err(),
        Some(JwksError::Malformed("no `keys` array"))
    );
    let many = json!({ "keys": (0..65).map(|_| json!({})).collect::<Vec<_>>() });
    assert_eq!(
        KeySet::from_jwks(many.to_string().as_bytes()).err(),
        Some(JwksError::TooManyKeys(65))
    );
    // Private key material and encryption keys are skipped.
    let mut private = rsa_jwk("p", None);
    private["d"] = json!("AA");
    let mut enc = rsa_jwk("e", None);
    enc["use"] = json!("enc");
    let set = KeySet::from_jwks(json!({ "keys": [private, enc] }).to_string().as_bytes()).expect("jwks");
    assert!(set.is_empty());
    assert_eq!(set.skipped, 2);
}
