//! How long does verifying a bearer token take with each key type, signature check included
//! (the uncached path), and how long does a repeated token take (the provider's cached path)?

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::identity::jwt::{verify, Alg, KeySet, Validation};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn tokens(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec");
    let ed = Ed25519KeyPair::generate().expect("ed");
    let p = ec.public_key().as_ref().to_vec();
    let jwks = json!({ "keys": [
        { "kty": "RSA", "kid": "rsa", "n": b64(rsa.public_key().modulus().big_endian_without_leading_zero()),
          "e": b64(rsa.public_key().exponent().big_endian_without_leading_zero()) },
        { "kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&p[1..33]), "y": b64(&p[33..]) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.public_key().as_ref()) },
    ]});
    let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).expect("jwks");
    let v = Validation {
        issuer: "https://idp.example".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Alg::RS256, Alg::ES256, Alg::EdDSA],
        leeway_secs: 30,
        require_at_jwt: false,
        max_token_bytes: 8192,
    };
    let claims = json!({ "iss": "https://idp.example", "aud": "api", "sub": "alice", "exp": NOW + 300, "iat": NOW, "scope": "read write" });
    let make = |alg: &str, kid: &str| {
        let input = format!(
            "{}.{}",
            b64(json!({ "alg": alg, "kid": kid }).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match alg {
            "RS256" => {
                let mut out = vec![0u8; rsa.public_modulus_len()];
                rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                    .expect("sign");
                out
            }
            "ES256" => ec.sign(&rng, input.as_bytes()).expect("sign").as_ref().to_vec(),
            _ => ed.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    };
    for (alg, kid) in [("RS256", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")] {
        let t = make(alg, kid);
        assert!(verify(&t, &keys, &v, NOW).is_ok());
        c.bench_function(&format!("verify {alg} token (no cache)"), |b| {
            b.iter(|| verify(std::hint::black_box(&t), &keys, &v, NOW).is_ok())
        });
    }

    // The provider's cached path: a repeated token is a digest and a map lookup.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = gateway::telemetry::Metrics::register(&mut registry);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let live = json!({ "iss": "https://idp.example", "aud": "api", "sub": "alice", "exp": now + 3600, "iat": now });
    let input = format!(
        "{}.{}",
        b64(json!({ "alg": "ES256", "kid": "ec" }).to_string().as_bytes()),
        b64(live.to_string().as_bytes())
    );
    let token = format!(
        "{input}.{}",
        b64(ec.sign(&rng, input.as_bytes()).expect("sign").as_ref())
    );
    let config = gateway::config::ProviderConfig {
        name: "bench".into(),
        issuer: "https://idp.example".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Alg::ES256],
        require_at_jwt: false,
        leeway_secs: 30,
        max_token_bytes: 8192,
        min_refresh_interval: std::time::Duration::from_secs(10),
        ca_files: Vec::new(),
        login: None,
    };
    let tls = rustls::ClientConfig::builder_with_provider(gateway::listen::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let provider = gateway::identity::provider::Provider::new(config, None, std::sync::Arc::new(tls), &metrics);
    provider.set_keys(KeySet::from_jwks(jwks.to_string().as_bytes()).expect("jwks"));
    assert!(rt.block_on(provider.authenticate(&token)).is_ok());
    c.bench_function("authenticate ES256 token (cached)", |b| {
        b.iter(|| rt.block_on(provider.authenticate(std::hint::black_box(&token))).is_ok())
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
