//! Browser sign-in against a real OpenID provider (`oidc-provider` from npm, started by the
//! test on 127.0.0.1), with a cookie-keeping client over real TLS: the authorization code flow
//! with PKCE, sessions, step-up, logout (local, RP-initiated, back-channel), revocation, and the
//! attacks on each step.

use base64::Engine as _;
use gateway_tests::{
    assert_eventually, cookie_attributes, json, location, metric, query, Browser, OidcProvider, TestGateway, TestPki,
    Upstream,
};

const COOKIE: &str = "__Host-gateway-session";
const LOGIN_COOKIE: &str = "__Host-gateway-session-login";

/// A gateway on `https://localhost:<port>` with browser sign-in through a provider, and the
/// provider, started with `env` (ACR_MODE, …).
struct Setup {
    gw: TestGateway,
    idp: OidcProvider,
    pki: TestPki,
    base: String,
    _up: Upstream,
}

impl Setup {
    /// Starts both. The gateway's port must be known before the provider starts (the
    /// provider registers its URLs), so it is picked free and then bound; when something else
    /// took it in between, everything starts again on another port.
    async fn start(env: &[(&str, &str)], sessions: &str) -> anyhow::Result<Setup> {
        let mut attempt = 0;
        loop {
            match Self::try_start(env, sessions).await {
                Err(e) if attempt < 3 && is_port_race(&e) => attempt += 1,
                result => return result,
            }
        }
    }

    async fn try_start(env: &[(&str, &str)], sessions: &str) -> anyhow::Result<Setup> {
        let pki = TestPki::new()?;
        let (cert, key) = pki.leaf("gw", &["localhost"])?;
        let key_file = pki.dir.path().join("cookie.key");
        std::fs::write(&key_file, base64::engine::general_purpose::STANDARD.encode([42u8; 32]))?;
        let gw_port = gateway_tests::free_port();
        let base = format!("https://localhost:{gw_port}");
        let ca = pki.dir.path().join("ca.pem");
        let mut all_env: Vec<(&str, String)> = vec![
            ("REDIRECT_URI", format!("{base}/.gateway/callback")),
            ("POST_LOGOUT_URI", format!("{base}/signed-out")),
            ("BACKCHANNEL_URI", format!("{base}/.gateway/backchannel-logout")),
            ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
            // `localhost` is the gateway on 127.0.0.1 (Node would try ::1 first).
            ("NODE_OPTIONS", "--dns-result-order=ipv4first".to_string()),
        ];
        all_env.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let env_refs: Vec<(&str, &str)> = all_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let idp = OidcProvider::start(gateway_tests::free_port(), &env_refs).await?;
        let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
        let yaml = format!(
            r#"
listeners:
  - name: https
    address: "127.0.0.1:{gw_port}"
    tls: {{ certificates: [{{ cert: "{cert}", key: "{key}" }}] }}
admin: {{ address: "127.0.0.1:0" }}
identity:
  providers:
    - name: idp
      issuer: {issuer}
      audiences: [api]
      algorithms: [ES256]
      login:
        client_id: web
        client_secret: web-secret
        scopes: [profile]
        post_logout_redirect_uri: {base}/signed-out
  sessions: {{ key_file: "{key_file}"{sessions} }}
routes:
  - {{ name: app, upstream: up, match: {{ path_prefix: /app }}, auth: {{ login: idp }} }}
  - {{ name: staff, upstream: up, match: {{ path_prefix: /staff }}, auth: {{ login: idp, claims: {{ groups: staff }} }} }}
  - {{ name: ops, upstream: up, match: {{ path_prefix: /ops }}, auth: {{ login: idp, claims: {{ groups: ops }} }} }}
  - {{ name: admin, upstream: up, match: {{ path_prefix: /admin }}, auth: {{ login: idp, acr_values: [urn:mfa] }} }}
  - {{ name: catalog, upstream: up, match: {{ path_prefix: /catalog }}, auth: {{ login: idp }}, trust: {{ step_up: {{ acr_values: [urn:mfa] }} }} }}
  - {{ name: public, upstream: up }}
upstreams: [{{ name: up, endpoints: ["http://{up}"] }}]
"#,
            cert = cert.display(),
            key = key.display(),
            key_file = key_file.display(),
            issuer = idp.issuer(),
            up = up.addr(),
        );
        let gw = TestGateway::start(&yaml).await?;
        assert_eventually!(
            metric(
                &gw.metrics().await?,
                "gateway_identity_provider_ready",
                &[("provider", "idp")]
            ) == Some(1.0),
            "the provider's metadata and keys load"
        );
        Ok(Setup {
            gw,
            idp,
            pki,
            base,
            _up: up,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.pki)
    }

    async fn admin(&self, method: http::Method, path: &str) -> anyhow::Result<gateway_tests::Collected> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        gateway_tests::send(self.gw.gw.admin_addr(), req).await
    }

    async fn sessions(&self) -> anyhow::Result<serde_json::Value> {
        Ok(json(&self.admin(http::Method::GET, "/identity/sessions").await?))
    }

    async fn count(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        Ok(metric(&self.gw.metrics().await?, name, labels).unwrap_or(0.0))
    }
}

/// Whether starting failed because a port picked free was taken before it was bound.
fn is_port_race(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("Address already in use") || text.contains("exited before it was ready")
}

/// Whether `url` is the provider's authorization endpoint.
fn at_authorize(idp: &OidcProvider, url: &str) -> bool {
    url.starts_with(&format!("{}/auth?", idp.issuer()))
}

/// Confirms a logout at the provider's `end_session` page, as a user clicking its button:
/// posts the form's `xsrf` with `logout=yes`; returns the provider's answer.
async fn confirm_logout(b: &Browser, end: &str) -> anyhow::Result<gateway_tests::Collected> {
    let page = b.get(end).await?;
    let html = String::from_utf8_lossy(page.body()).to_string();
    let field = |marker: &str| {
        html.split(marker)
            .nth(1)
            .and_then(|t| t.split('"').next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {marker} in the logout page: {html}"))
    };
    let (xsrf, action) = (field("name=\"xsrf\" value=\"")?, field("action=\"")?);
    let confirm = gateway_tests::resolve(end, &action)?;
    b.send(http::Method::POST, &confirm, Some(&format!("xsrf={xsrf}&logout=yes")))
        .await
}

#[tokio::test]
async fn sign_in_session_requirements_and_logout() -> anyhow::Result<()> {
    let s = Setup::start(&[], "").await?;
    let b = s.browser();

    // No session: sent to the provider, with PKCE, state and nonce, and a login cookie.
    let r = b.get(&s.url("/app/page?x=1")).await?;
    assert_eq!(r.status(), 302);
    let to = location(&r)?.to_string();
    assert!(at_authorize(&s.idp, &to), "{to}");
    let q = query(&to);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "web");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["scope"], "openid profile");
    assert_eq!(q["redirect_uri"], s.url("/.gateway/callback"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);
    assert!(!q.contains_key("acr_values") && !q.contains_key("prompt"));
    let login = r.headers()["set-cookie"].to_str()?;
    assert!(login.starts_with(LOGIN_COOKIE));
    for a in ["httponly", "secure", "samesite=lax", "path=/"] {
        assert!(cookie_attributes(login).iter().any(|x| x == a), "{a} in {login}");
    }

    // Through the provider and back to the page first asked for.
    let (r, visited) = b.follow(&to).await?;
    assert_eq!(r.status(), 200, "{visited:?} {:?}", r.body());
    assert_eq!(
        visited.last().map(String::as_str),
        Some(s.url("/app/page?x=1").as_str())
    );
    let echo = json(&r);
    assert_eq!(echo["path"], "/app/page");
    assert_eq!(echo["headers"]["x-auth-subject"], "alice");
    let cookie = b.cookie("localhost", COOKIE).expect("session cookie");
    assert!(cookie.len() < 200, "bounded cookie: {} bytes", cookie.len());
    assert_eq!(b.cookie("localhost", LOGIN_COOKIE), None, "login cookie cleared");

    // What the session records.
    let list = s.sessions().await?;
    assert_eq!(list["total"], 1);
    let rec = &list["sessions"][0];
    assert_eq!(rec["subject"], "alice");
    assert_eq!(rec["provider"], "idp");
    assert_eq!(rec["acr"], "urn:pwd");
    assert_eq!(rec["amr"], serde_json::json!(["pwd"]));
    assert!(rec["auth_time"].as_u64().is_some());
    assert_eq!(rec["client_addr"], "127.0.0.1");
    assert_eq!(rec["user_agent"], "gateway-tests-browser/1");
    assert_eq!(rec["session"].as_str().map(str::len), Some(64));
    assert_eq!(s.count("gateway_sessions_active", &[]).await?, 1.0);

    // The session serves further requests; claims from the ID token are checked.
    assert_eq!(b.get(&s.url("/app/other")).await?.status(), 200);
    assert_eq!(b.get(&s.url("/staff/x")).await?.status(), 200);
    let r = b.get(&s.url("/ops/x")).await?;
    assert_eq!(r.status(), 403);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:missing-claim");
    // A request that cannot be redirected gets 401 instead of a sign-in.
    let anon = s.browser();
    let r = anon.send(http::Method::POST, &s.url("/app/x"), Some("a=1")).await?;
    assert_eq!(r.status(), 401);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:login-required");

    // Logout: the session ends here and at the provider (RP-initiated logout).
    let r = b.get(&s.url("/.gateway/logout")).await?;
    assert_eq!(r.status(), 302);
    let end = location(&r)?.to_string();
    assert!(end.starts_with(&format!("{}/session/end?", s.idp.issuer())), "{end}");
    let q = query(&end);
    assert_eq!(q["client_id"], "web");
    assert_eq!(q["post_logout_redirect_uri"], s.url("/signed-out"));
    assert!(q["id_token_hint"].split('.').count() == 3);
    assert_eq!(b.cookie("localhost", COOKIE), None, "session cookie deleted");
    assert_eq!(s.sessions().await?["total"], 0);
    // The provider asks to confirm; confirming lands on the registered page.
    let r = confirm_logout(&b, &end).await?;
    assert!(r.status().is_redirection(), "{} {:?}", r.status(), r.body());
    assert_eq!(location(&r)?, s.url("/signed-out"));

    // The old cookie, replayed, is no session: the browser is sent to sign in again.
    b.set_cookie("localhost", COOKIE, &cookie);
    let r = b.get(&s.url("/app/page")).await?;
    assert_eq!(r.status(), 302);
    assert!(at_authorize(&s.idp, location(&r)?));
    assert_eq!(
        s.count("gateway_session_events_total", &[("event", "logged_out")])
            .await?,
        1.0
    );
    assert_eq!(s.count("gateway_logins_total", &[("result", "success")]).await?, 1.0);
    Ok(())
}

#[tokio::test]
async fn step_up_round_trip_with_a_higher_acr() -> anyhow::Result<()> {
    let s = Setup::start(&[("ACR_MODE", "honour")], "").await?;
    let b = s.browser();
    let (r, _) = b.follow(&s.url("/app")).await?;
    assert_eq!(r.status(), 200);
    let weak = b.cookie("localhost", COOKIE).expect("session");

    // The admin route needs urn:mfa: back to the provider with acr_values and prompt=login.
    let r = b.get(&s.url("/admin/panel")).await?;
    assert_eq!(r.status(), 302);
    let to = location(&r)?.to_string();
    assert!(at_authorize(&s.idp, &to));
    let q = query(&to);
    assert_eq!(q["acr_values"], "urn:mfa");
    assert_eq!(q["prompt"], "login");
    let (r, visited) = b.follow(&to).await?;
    assert_eq!(r.status(), 200, "{visited:?} {:?}", r.body());
    assert_eq!(json(&r)["path"], "/admin/panel");
    let list = s.sessions().await?;
    assert_eq!(list["total"], 1, "the stepped-up session replaces the old one");
    assert_eq!(list["sessions"][0]["acr"], "urn:mfa");
    assert_eq!(list["sessions"][0]["amr"], serde_json::json!(["pwd", "otp"]));
    // The session id changed with the privilege; the weak cookie no longer works.
    assert_ne!(b.cookie("localhost", COOKIE).as_deref(), Some(weak.as_str()));
    let other = s.browser();
    other.set_cookie("localhost", COOKIE, &weak);
    assert_eq!(other.get(&s.url("/app")).await?.status(), 302);
    assert_eq!(b.get(&s.url("/admin/again")).await?.status(), 200);
    assert_eq!(
        s.count("gateway_step_ups_total", &[("kind", "browser"), ("result", "issued")])
            .await?,
        1.0
    );
    assert_eq!(
        s.count(
            "gateway_step_ups_total",
            &[("kind", "browser"), ("result", "satisfied")]
        )
        .await?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn risk_sends_the_browser_to_step_up_and_a_satisfied_step_up_is_not_asked_again() -> anyhow::Result<()> {
    let s = Setup::start(&[("ACR_MODE", "honour")], "").await?;
    let b = s.browser();
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    // Breadth-first through the catalogue, fast (ten pages a second; the engine publishes
    // every 10 ms): at some point the gateway sends the browser to the provider for urn:mfa
    // instead of answering.
    let mut redirect = None;
    for i in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = b.get(&s.url(&format!("/catalog/item-{i}"))).await?;
        if r.status() == 302 {
            redirect = Some((i, location(&r)?.to_string()));
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let (n, to) = redirect.expect("the scraping browser was asked to step up");
    assert!((5..=25).contains(&n), "stepped up after {n} pages");
    assert!(at_authorize(&s.idp, &to));
    assert_eq!(query(&to)["acr_values"], "urn:mfa");
    let (r, visited) = b.follow(&to).await?;
    assert_eq!(r.status(), 200, "{visited:?}");
    assert_eq!(json(&r)["path"], format!("/catalog/item-{n}"));
    assert_eq!(s.sessions().await?["sessions"][0]["acr"], "urn:mfa");
    // The stronger session carries on; the risk is still there, but it is met.
    assert_eq!(b.get(&s.url("/catalog/item-0")).await?.status(), 200);
    let m = s.gw.metrics().await?;
    assert_eq!(
        metric(
            &m,
            "gateway_trust_decisions_total",
            &[("route", "catalog"), ("decision", "step_up"), ("mode", "enforce")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            "gateway_trust_reasons_total",
            &[("route", "catalog"), ("decision", "step_up"), ("reason", "scraping")]
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    Ok(())
}

#[tokio::test]
async fn a_provider_returning_a_lower_acr_does_not_satisfy_step_up() -> anyhow::Result<()> {
    let s = Setup::start(&[("ACR_MODE", "low")], "").await?;
    let b = s.browser();
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    let (r, visited) = b.follow(&s.url("/admin")).await?;
    assert_eq!(r.status(), 403, "{visited:?}");
    assert_eq!(json(&r)["type"], "urn:gateway:problem:step-up-failed");
    // The session is unchanged: still weak, still good for what it was good for.
    let list = s.sessions().await?;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["acr"], "urn:pwd");
    assert_eq!(b.get(&s.url("/app")).await?.status(), 200);
    assert_eq!(b.get(&s.url("/admin")).await?.status(), 302, "asked to step up again");
    assert_eq!(
        s.count("gateway_step_ups_total", &[("kind", "browser"), ("result", "failed")])
            .await?,
        1.0
    );
    Ok(())
}

/// Follows the sign-in from the gateway's redirect until the provider sends the browser back
/// to the callback; returns the callback URL without visiting it.
async fn until_callback(b: &Browser, s: &Setup, mut url: String) -> anyhow::Result<String> {
    for _ in 0..10 {
        if url.starts_with(&s.url("/.gateway/callback")) {
            return Ok(url);
        }
        let r = b.get(&url).await?;
        anyhow::ensure!(r.status().is_redirection(), "{url}: {}", r.status());
        url = gateway_tests::resolve(&url, location(&r)?)?;
    }
    anyhow::bail!("never came back to the callback")
}

#[tokio::test]
async fn attacks_on_cookies_state_nonce_and_return_url_are_refused() -> anyhow::Result<()> {
    let s = Setup::start(&[], ", absolute_timeout: 3s").await?;
    let b = s.browser();
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    let good = b.cookie("localhost", COOKIE).expect("session");

    // A tampered cookie: one character changed.
    let mut chars: Vec<char> = good.chars().collect();
    chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
    let evil = s.browser();
    evil.set_cookie("localhost", COOKIE, &chars.into_iter().collect::<String>());
    let r = evil.get(&s.url("/app")).await?;
    assert_eq!(r.status(), 302, "a tampered cookie is no session");
    // A cookie sealed under another gateway's key, around a well-formed secret.
    let foreign = gateway::identity::session::CookieKey::random().seal(COOKIE, &[7u8; 32]);
    evil.set_cookie("localhost", COOKIE, &foreign);
    assert_eq!(evil.get(&s.url("/app")).await?.status(), 302);
    evil.set_cookie("localhost", COOKIE, "junk");
    assert_eq!(evil.get(&s.url("/app")).await?.status(), 302);
    assert!(
        s.count("gateway_session_events_total", &[("event", "invalid_cookie")])
            .await?
            >= 3.0
    );

    // A replayed state: the first callback signs in; the same callback again is refused.
    let c = s.browser();
    let start = location(&c.get(&s.url("/app/one")).await?)?.to_string();
    let login_cookie = c.cookie("localhost", LOGIN_COOKIE).expect("login cookie");
    let callback = until_callback(&c, &s, start).await?;
    let r = c.get(&callback).await?;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r)?, "/app/one");
    c.set_cookie("localhost", LOGIN_COOKIE, &login_cookie);
    let r = c.get(&callback).await?;
    assert_eq!(r.status(), 400);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:login-state");
    // A callback in a browser that did not start the sign-in (login CSRF) is refused.
    let d = s.browser();
    let start = location(&d.get(&s.url("/app")).await?)?.to_string();
    let callback = until_callback(&d, &s, start).await?;
    let stranger = s.browser();
    assert_eq!(stranger.get(&callback).await?.status(), 400);
    assert_eq!(stranger.cookie("localhost", COOKIE), None);

    // No nonce in the authorization request, so none in the ID token: refused.
    let e = s.browser();
    let start = location(&e.get(&s.url("/app")).await?)?.to_string();
    let without_nonce: String = {
        let (base, q) = start.split_once('?').expect("query");
        let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("nonce=")).collect();
        format!("{base}?{}", kept.join("&"))
    };
    let callback = until_callback(&e, &s, without_nonce).await?;
    let r = e.get(&callback).await?;
    assert_eq!(r.status(), 403);
    assert_eq!(json(&r)["type"], "urn:gateway:problem:login-failed");
    assert_eq!(e.cookie("localhost", COOKIE), None);
    assert_eq!(
        s.count("gateway_logins_total", &[("result", "nonce_mismatch")]).await?,
        1.0
    );

    // Open redirects through the return URL.
    for bad in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "https:evil.example",
    ] {
        let enc: String = form_urlencoded::byte_serialize(bad.as_bytes()).collect();
        for path in ["/.gateway/login", "/.gateway/logout"] {
            let r = e.get(&s.url(&format!("{path}?return_to={enc}"))).await?;
            assert_eq!(r.status(), 400, "{path} {bad}");
        }
    }
    // A path on the site is fine, and is where the sign-in lands.
    let r = e.get(&s.url("/.gateway/login?return_to=%2Fapp%2Fdeep%3Fq%3D1")).await?;
    assert_eq!(r.status(), 302);
    let (r, visited) = e.follow(location(&r)?).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        visited.last().map(String::as_str),
        Some(s.url("/app/deep?q=1").as_str())
    );

    // Absolute expiry (3 s here): the session ends however much it is used.
    assert_eventually!(
        b.get(&s.url("/app")).await?.status() == 302,
        "the session ends at its absolute timeout"
    );
    assert!(
        s.count("gateway_session_events_total", &[("event", "expired_absolute")])
            .await?
            >= 1.0
    );
    Ok(())
}

#[tokio::test]
async fn back_channel_logout_and_admin_revocation_end_sessions() -> anyhow::Result<()> {
    let s = Setup::start(&[], "").await?;
    let b = s.browser();
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);

    // Junk logout tokens are refused with 400 and change nothing.
    let junk = s.browser();
    for body in ["logout_token=abc", "nothing=1", "logout_token=a.b.c"] {
        let r = junk
            .send(http::Method::POST, &s.url("/.gateway/backchannel-logout"), Some(body))
            .await?;
        assert_eq!(r.status(), 400, "{body}");
    }
    // An ID token is not a logout token (no event; it carries a nonce).
    let id_token = query(location(&b.get(&s.url("/.gateway/logout?return_to=/app")).await?)?)["id_token_hint"].clone();
    assert_eq!(s.sessions().await?["total"], 0);
    let r = junk
        .send(
            http::Method::POST,
            &s.url("/.gateway/backchannel-logout"),
            Some(&format!("logout_token={id_token}")),
        )
        .await?;
    assert_eq!(r.status(), 400);

    // Sign in again, then log out at the provider directly: it tells the gateway through the
    // back channel, and the gateway session ends.
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    assert_eq!(s.sessions().await?["total"], 1);
    let r = confirm_logout(&b, &format!("{}/session/end", s.idp.issuer())).await?;
    assert!(r.status().is_redirection() || r.status() == 200, "{}", r.status());
    assert_eventually!(
        s.sessions().await?["total"] == 0,
        "the back-channel logout ends the session"
    );
    assert_eq!(
        s.count("gateway_backchannel_logouts_total", &[("result", "accepted")])
            .await?,
        1.0
    );
    assert_eq!(b.get(&s.url("/app")).await?.status(), 302);

    // Admin revocation: one session by handle, or every session of a subject.
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    let handle = s.sessions().await?["sessions"][0]["session"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = s
        .admin(http::Method::POST, &format!("/identity/revoke?session={handle}"))
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["sessions_ended"], 1);
    assert_eq!(b.get(&s.url("/app")).await?.status(), 302);
    assert_eq!(
        s.admin(http::Method::POST, &format!("/identity/revoke?session={handle}"))
            .await?
            .status(),
        404
    );
    assert_eq!(b.follow(&s.url("/app")).await?.0.status(), 200);
    let r = s.admin(http::Method::POST, "/identity/revoke?subject=alice").await?;
    assert_eq!(json(&r)["sessions_ended"], 1);
    assert_eq!(b.get(&s.url("/app")).await?.status(), 302);
    assert_eq!(s.count("gateway_sessions_active", &[]).await?, 0.0);
    Ok(())
}
