//! Bearer tokens against a real OpenID provider: `oidc-provider` from npm (installed by
//! `scripts/test.sh` into `tests/oidc`), started on 127.0.0.1 by the test. It issues JWT access
//! tokens (RFC 9068) through the client-credentials grant.

use bytes::Bytes;
use gateway_tests::{assert_eventually, json, metric, send, Collected, TestGateway, Upstream};
use http_body_util::Full;

type Idp = gateway_tests::OidcProvider;

async fn gateway(idp_port: u16) -> anyhow::Result<(TestGateway, Upstream)> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
identity:
  providers:
    - name: idp
      issuer: http://127.0.0.1:{idp_port}
      audiences: [api]
      algorithms: [ES256]
      require_at_jwt: true
      min_refresh_interval: 10s
  upstream_headers:
    claims: {{ scope: x-auth-scope, client_id: x-auth-client }}
  assertion: {{ ttl: 60s }}
routes:
  - {{ name: public, upstream: up, match: {{ path_prefix: /public }} }}
  - {{ name: write, upstream: up, match: {{ path_prefix: /write }}, auth: {{ bearer: idp, scopes: [write] }} }}
  - {{ name: own, upstream: up, match: {{ path_prefix: /own }}, auth: {{ bearer: idp, claims: {{ client_id: svc }} }} }}
  - {{ name: other, upstream: up, match: {{ path_prefix: /other }}, auth: {{ bearer: idp, claims: {{ client_id: someone-else }} }} }}
  - {{ name: mfa, upstream: up, match: {{ path_prefix: /mfa }}, auth: {{ bearer: idp, acr_values: [urn:mfa], max_age: 5m }} }}
  - {{ name: api, upstream: up, auth: {{ bearer: idp }} }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        up.addr()
    );
    Ok((TestGateway::start(&yaml).await?, up))
}

async fn call(gw: &TestGateway, token: Option<&str>) -> anyhow::Result<Collected> {
    let mut req = http::Request::get("/orders").header("host", "api.test");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(gw.addr("http"), req.body(Full::new(Bytes::new()))?).await
}

async fn ready(gw: &TestGateway) -> anyhow::Result<bool> {
    Ok(metric(
        &gw.metrics().await?,
        "gateway_identity_provider_ready",
        &[("provider", "idp")],
    ) == Some(1.0))
}

#[tokio::test]
async fn bearer_tokens_from_a_real_provider() -> anyhow::Result<()> {
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");

    let r = call(&gw, None).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"gateway\"");
    assert_eq!(json(&r)["type"], "urn:gateway:problem:missing-token");

    let r = call(&gw, Some("not-a-token")).await?;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()?
        .contains("error=\"invalid_token\""));

    let token = idp.token().await?;
    for _ in 0..3 {
        let r = call(&gw, Some(&token)).await?;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["path"], "/orders");
    }
    // Public routes need nothing.
    assert_eq!(
        send(gw.addr("http"), gateway_tests::request("api.test", "/public/x"))
            .await?
            .status(),
        200
    );

    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "ok"), ("reason", "verified")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "ok"), ("reason", "cached")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "gateway_auth_outcomes_total", &[("outcome", "missing")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "invalid"), ("reason", "malformed")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "gateway_identity_keys", &[("provider", "idp")]), Some(1.0));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_provider_means_503_until_it_answers() -> anyhow::Result<()> {
    let port = gateway_tests::free_port();
    let (gw, _up) = gateway(port).await?;
    let r = call(&gw, Some("eyJhbGciOiJFUzI1NiJ9.e30.AA")).await?;
    assert_eq!(r.status(), 503);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:identity-unavailable");
    assert!(!ready(&gw).await?);
    assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_identity_key_refreshes_total",
            &[("result", "failure")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the failure is counted"
    );
    // The provider comes up: the gateway retries and starts accepting its tokens.
    let idp = Idp::start(port, &[("KID", "key-1")]).await?;
    assert_eventually!(ready(&gw).await?, "keys load once the provider answers");
    let token = idp.token().await?;
    assert_eq!(call(&gw, Some(&token)).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn key_rotation_and_the_unknown_kid_refresh_limit() -> anyhow::Result<()> {
    let port = gateway_tests::free_port();
    let idp = Idp::start(port, &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(port).await?;
    assert_eventually!(ready(&gw).await?, "keys load");
    let old = idp.token().await?;
    assert_eq!(call(&gw, Some(&old)).await?.status(), 200);

    // Rotate: the provider restarts with a new key; the gateway has not refreshed yet.
    drop(idp);
    let idp = Idp::start(port, &[("KID", "key-2")]).await?;
    let new = idp.token().await?;
    let r = call(&gw, Some(&new)).await?;
    assert_eq!(r.status(), 200, "the unknown key id forces one refresh: {:?}", r.body());
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_identity_forced_refreshes_total",
            &[("result", "performed")]
        ),
        Some(1.0)
    );

    // A flood of junk key ids within min_refresh_interval forces no further refresh.
    for i in 0..20 {
        let header = base64_url(&format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"junk-{i}"}}"#));
        let r = call(&gw, Some(&format!("{header}.e30.AAAA"))).await?;
        assert_eq!(r.status(), 401);
    }
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_identity_forced_refreshes_total",
            &[("result", "performed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_identity_forced_refreshes_total",
            &[("result", "rate_limited")]
        ),
        Some(20.0)
    );
    // The new key keeps working; the old key's tokens are gone with it.
    assert_eq!(call(&gw, Some(&new)).await?.status(), 200);
    Ok(())
}

fn base64_url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn route_requirements_and_step_up() -> anyhow::Result<()> {
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");
    let token = idp.token().await?; // scope "read", client_id "svc", no acr or auth_time
    let at = |path: &str| {
        http::Request::get(path)
            .header("host", "api.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let r = send(gw.addr("http"), at("/write")).await?;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"write\""
    );
    assert_eq!(send(gw.addr("http"), at("/own")).await?.status(), 200);
    let r = send(gw.addr("http"), at("/other")).await?;
    assert_eq!(r.status(), 403);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:missing-claim");
    // The token carries no acr: an RFC 9470 challenge asks the client to step up.
    let r = send(gw.addr("http"), at("/mfa")).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A different authentication level is required\", acr_values=\"urn:mfa\", max_age=\"300\""
    );
    let m = gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "denied"), ("reason", "step_up")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "denied"), ("reason", "insufficient_scope")]
        ),
        Some(1.0)
    );
    Ok(())
}

#[tokio::test]
async fn identity_headers_reach_the_upstream_and_cannot_be_spoofed() -> anyhow::Result<()> {
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");
    let token = idp.token().await?;
    let spoofed = |path: &str, auth: bool| {
        let mut b = http::Request::get(path)
            .header("host", "api.test")
            .header("x-auth-subject", "admin")
            .header("x-auth-scope", "everything")
            .header("x-auth-client", "root");
        if auth {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        b.body(Full::new(Bytes::new())).expect("request")
    };
    // A public route: the client's identity headers are removed, none are set.
    let r = send(gw.addr("http"), spoofed("/public/x", false)).await?;
    let h = &json(&r)["headers"];
    for name in ["x-auth-subject", "x-auth-scope", "x-auth-client"] {
        assert!(h.get(name).is_none(), "{name} must not reach the upstream: {h}");
    }
    // An authenticated route: the headers come from the verified token.
    let r = send(gw.addr("http"), spoofed("/orders", true)).await?;
    assert_eq!(r.status(), 200);
    let h = &json(&r)["headers"];
    assert_eq!(h["x-auth-subject"], "svc");
    assert_eq!(h["x-auth-scope"], "read");
    assert_eq!(h["x-auth-client"], "svc");
    Ok(())
}

#[tokio::test]
async fn upstreams_receive_a_verifiable_assertion() -> anyhow::Result<()> {
    use gateway::identity::jwt::{verify, Alg, KeySet, Validation};
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");
    let token = idp.token().await?;
    let req = |path: &str, auth: bool| {
        let mut b = http::Request::get(path)
            .header("host", "api.test")
            .header("x-gateway-assertion", "forged");
        if auth {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        b.body(Full::new(Bytes::new())).expect("request")
    };
    let r = send(gw.addr("http"), req("/public/x", false)).await?;
    assert!(
        json(&r)["headers"].get("x-gateway-assertion").is_none(),
        "a client cannot send an assertion"
    );

    let r = send(gw.addr("http"), req("/orders", true)).await?;
    let assertion = json(&r)["headers"]["x-gateway-assertion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(assertion, "forged");
    // The upstream verifies it with the gateway's published keys.
    let jwks = gateway_tests::get(&format!("http://{}/.well-known/jwks.json", gw.gw.admin_addr())).await?;
    let keys = KeySet::from_jwks(jwks.body())?;
    let v = Validation {
        issuer: "gateway".into(),
        audiences: vec!["up".into()],
        algorithms: vec![Alg::ES256],
        leeway_secs: 5,
        require_at_jwt: false,
        max_token_bytes: 8192,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = verify(&assertion, &keys, &v, now)?;
    assert_eq!(claims.subject.as_deref(), Some("svc"));
    assert_eq!(claims.all["scope"], "read");
    assert!(claims.expires <= now + 61);
    Ok(())
}

#[tokio::test]
async fn a_revoked_subject_is_refused_until_it_gets_a_new_token() -> anyhow::Result<()> {
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");
    let old = idp.token().await?;
    assert_eq!(call(&gw, Some(&old)).await?.status(), 200);
    let admin = gw.gw.admin_addr();
    let revoke = http::Request::post("/identity/revoke?subject=svc")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))?;
    let r = send(admin, revoke).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["subject"], "svc");
    // The cached, still unexpired token is refused from now on.
    let r = call(&gw, Some(&old)).await?;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str()?.contains("invalid_token"));
    // A token issued after the revocation (iat has one-second granularity) is accepted.
    assert_eventually!(
        call(&gw, Some(&idp.token().await?)).await?.status() == 200,
        "a new token works"
    );
    let m = gw.metrics().await?;
    assert_eq!(metric(&m, "gateway_identity_revocations_total", &[]), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "gateway_auth_outcomes_total",
            &[("outcome", "invalid"), ("reason", "revoked")]
        )
        .map(|v| v >= 1.0),
        Some(true)
    );
    let bad = http::Request::post("/identity/revoke")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))?;
    assert_eq!(send(admin, bad).await?.status(), 400);
    Ok(())
}

fn b64u(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Attacks through the gateway: each answered 401 (or 431 for the oversized one), none crashes
/// anything, and the real token keeps working afterwards.
#[tokio::test]
async fn token_attacks_are_refused() -> anyhow::Result<()> {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    let idp = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let other = Idp::start(gateway_tests::free_port(), &[("KID", "key-1")]).await?;
    let (gw, _up) = gateway(idp.port).await?;
    assert_eventually!(ready(&gw).await?, "the provider's keys load");
    let real = idp.token().await?;
    let parts: Vec<&str> = real.split('.').collect();
    let payload: serde_json::Value = {
        use base64::Engine as _;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1])?)?
    };
    let enc = |v: &serde_json::Value| b64u(v.to_string().as_bytes());
    let attacker = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| anyhow::anyhow!("key"))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let attacker_signed = |header: serde_json::Value, body: &serde_json::Value| -> String {
        let input = format!("{}.{}", enc(&header), enc(body));
        let sig = attacker
            .sign(&rng, input.as_bytes())
            .map(|s| b64u(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{sig}")
    };
    let p = attacker.public_key().as_ref().to_vec();
    let attacker_jwk = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": b64u(&p[1..33]), "y": b64u(&p[33..]) });
    // HS256 keyed with the provider's published key set, a classic confusion attempt.
    let jwks = gateway_tests::get(&format!("http://127.0.0.1:{}/jwks", idp.port)).await?;
    let hs_input = format!(
        "{}.{}",
        enc(&serde_json::json!({ "alg": "HS256", "kid": "key-1" })),
        parts[1]
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwks.body()),
        hs_input.as_bytes(),
    );
    let mut admin_claims = payload.clone();
    admin_claims["sub"] = serde_json::json!("admin");

    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", enc(&serde_json::json!({ "alg": "none" })), parts[1]),
        ),
        (
            "HS256 with the provider's key",
            format!("{hs_input}.{}", b64u(tag.as_ref())),
        ),
        (
            "embedded jwk",
            attacker_signed(
                serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": "key-1", "jwk": attacker_jwk }),
                &payload,
            ),
        ),
        (
            "jku",
            attacker_signed(
                serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": "key-1", "jku": "http://127.0.0.1:9/jwks" }),
                &payload,
            ),
        ),
        (
            "x5u",
            attacker_signed(
                serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": "key-1", "x5u": "http://127.0.0.1:9/cert" }),
                &payload,
            ),
        ),
        (
            "unknown crit",
            attacker_signed(
                serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": "key-1", "crit": ["x-ext"] }),
                &payload,
            ),
        ),
        ("broken base64", "%%%.%%%.%%%".to_string()),
        ("broken JSON", format!("{}.{}.AAAA", b64u(b"{not json"), parts[1])),
        (
            "modified payload",
            format!("{}.{}.{}", parts[0], enc(&admin_claims), parts[2]),
        ),
        ("another provider's token", other.token().await?),
    ];
    for (name, token) in &attacks {
        let r = call(&gw, Some(token)).await?;
        assert_eq!(r.status(), 401, "{name}: {:?}", r.body());
        assert!(
            r.headers()["www-authenticate"].to_str()?.contains("invalid_token"),
            "{name}"
        );
    }
    // 64 KiB of token: refused before any parsing.
    let huge = "a".repeat(64 * 1024);
    let status = call(&gw, Some(&huge)).await?.status().as_u16();
    assert!(status == 431 || status == 401, "oversized token: {status}");
    // The real token still works: nothing above broke anything.
    assert_eq!(call(&gw, Some(&real)).await?.status(), 200);
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_auth_outcomes_total", &[("outcome", "invalid")]),
        Some(attacks.len() as f64)
    );
    Ok(())
}

/// Tokens for another audience, and tokens past their expiry, are refused.
#[tokio::test]
async fn wrong_audience_and_expired_tokens_are_refused() -> anyhow::Result<()> {
    let idp = Idp::start(gateway_tests::free_port(), &[("TTL", "1")]).await?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
identity:
  providers:
    - {{ name: idp, issuer: "http://127.0.0.1:{}", audiences: [api], algorithms: [ES256], leeway: 1s }}
    - {{ name: strict, issuer: "http://127.0.0.1:{}", audiences: [billing], algorithms: [ES256] }}
routes:
  - {{ name: billing, upstream: up, match: {{ path_prefix: /billing }}, auth: {{ bearer: strict }} }}
  - {{ name: api, upstream: up, auth: {{ bearer: idp }} }}
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
"#,
        idp.port,
        idp.port,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    assert_eventually!(
        metric(&gw.metrics().await?, "gateway_identity_provider_ready", &[]) == Some(2.0),
        "both providers load"
    );
    let token = idp.token().await?;
    let billing = http::Request::get("/billing/x")
        .header("host", "x")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    assert_eq!(
        send(gw.addr("http"), billing).await?.status(),
        401,
        "aud api is not billing"
    );
    assert_eq!(call(&gw, Some(&token)).await?.status(), 200);
    // One second of lifetime plus one of leeway: it expires.
    assert_eventually!(call(&gw, Some(&token)).await?.status() == 401, "the token expires");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_auth_outcomes_total", &[("reason", "wrong_audience")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "gateway_auth_outcomes_total", &[("reason", "expired")]),
        Some(1.0)
    );
    Ok(())
}
