//! The real binary's log: JSON lines with one access event per request, a level a reload can
//! change, and no secret in it (tokens, cookies, client secrets, query strings), at debug level
//! for every crate, through a browser sign-in, bearer calls and a logout against the real
//! OpenID provider.

use base64::Engine as _;
use gateway_tests::{assert_eventually, get, json, location, query, Browser, OidcProvider, Process, TestPki, Upstream};

fn config(port: u16, admin: u16, pki: &TestPki, issuer: &str, up: &Upstream, level: &str) -> anyhow::Result<String> {
    // A port nothing listens on (the same one for both configs is not needed).
    let closed = gateway_tests::free_port();
    let (cert, key) = (pki.dir.path().join("gw.pem"), pki.dir.path().join("gw.key"));
    let key_file = pki.dir.path().join("cookie.key");
    Ok(format!(
        r#"
listeners:
  - name: https
    address: "127.0.0.1:{port}"
    tls: {{ certificates: [{{ cert: "{cert}", key: "{key}" }}] }}
admin: {{ address: "127.0.0.1:{admin}" }}
identity:
  providers:
    - name: idp
      issuer: {issuer}
      audiences: [api]
      login: {{ client_id: web, client_secret: web-secret }}
  sessions: {{ key_file: "{key_file}" }}
routes:
  - {{ name: app, upstream: up, match: {{ path_prefix: /app }}, auth: {{ login: idp }} }}
  - {{ name: api, upstream: up, match: {{ path_prefix: /api }}, auth: {{ bearer: idp }} }}
  - {{ name: broken, upstream: gone, match: {{ path_prefix: /broken }} }}
upstreams:
  - {{ name: up, endpoints: ["http://{up}"] }}
  - {{ name: gone, endpoints: ["http://127.0.0.1:{closed}"] }}
telemetry: {{ logs: {{ level: "{level}", format: json }} }}
reload: {{ watch: false }}
"#,
        cert = cert.display(),
        key = key.display(),
        key_file = key_file.display(),
        up = up.addr(),
    ))
}

fn access_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("\"gateway::access\"")).count()
}

#[tokio::test]
async fn no_secret_reaches_the_log_and_its_level_reloads() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    pki.leaf("gw", &["localhost"])?;
    std::fs::write(
        pki.dir.path().join("cookie.key"),
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    )?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gw.yaml");
    let log_path = dir.path().join("gateway.log");
    // The gateway's ports are picked free before the provider, which registers its URLs, and
    // bound after it; if something took one in between, everything starts again.
    let mut attempt = 0;
    let (port, admin, base, idp, _gw) = loop {
        let (port, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
        let base = format!("https://localhost:{port}");
        let idp = OidcProvider::start(
            gateway_tests::free_port(),
            &[("REDIRECT_URI", &format!("{base}/.gateway/callback"))],
        )
        .await?;
        std::fs::write(&path, config(port, admin, &pki, &idp.issuer(), &up, "debug")?)?;
        let gw = Process::spawn_logging(
            &gateway_tests::gateway_bin!(),
            &["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            &log_path,
        )?;
        let metrics = format!("http://127.0.0.1:{admin}/metrics");
        let mut bind_failed;
        assert_eventually!(
            {
                bind_failed = std::fs::read_to_string(&log_path)?.contains("cannot bind");
                bind_failed
                    || get(&metrics).await.is_ok_and(|r| {
                        gateway_tests::metric(
                            &String::from_utf8_lossy(r.body()),
                            "gateway_identity_provider_ready",
                            &[("provider", "idp")],
                        ) == Some(1.0)
                    })
            },
            "the gateway is up with the provider's keys"
        );
        if !bind_failed {
            break (port, admin, base, idp, gw);
        }
        attempt += 1;
        anyhow::ensure!(attempt < 3, "no free ports after three attempts");
    };

    // A browser signs in; its cookies are secrets.
    let b = Browser::new(&pki);
    let first = b.get(&format!("{base}/app/page")).await?;
    let login_cookie = first.headers()["set-cookie"].to_str()?.to_string();
    let (r, _) = b.follow(location(&first)?).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["headers"]["x-auth-subject"], "alice");
    let session = b.cookie("localhost", "__Host-gateway-session").expect("session");
    // Bearer calls, good and bad; a query string with a secret in it.
    let token = idp.token().await?;
    let api = Browser::new(&pki);
    let orders = format!("{base}/api/orders");
    let with = |auth: &str| [("authorization", auth.to_string())];
    let call = |auth: String| {
        let (api, orders) = (&api, &orders);
        async move { api.send_with(http::Method::GET, orders, &with(&auth)).await }
    };
    assert_eq!(call(format!("Bearer {token}")).await?.status(), 200);
    assert_eq!(call("Bearer SECRETJUNK.token.value".into()).await?.status(), 401);
    assert_eq!(call("Basic dXNlcjpTRUNSRVRQQVNT".into()).await?.status(), 401);
    assert_eq!(
        b.get(&format!("{base}/app/x?access_token=SECRETQUERY")).await?.status(),
        200
    );
    // Logout hands the ID token to the provider.
    let out = b.get(&format!("{base}/.gateway/logout")).await?;
    let id_token = query(location(&out)?)["id_token_hint"].clone();

    // The writer thread writes in batches: wait for the logout's own access line.
    let logout_id = out.headers()["x-request-id"].to_str()?.to_string();
    assert_eventually!(
        std::fs::read_to_string(&log_path)?.contains(&logout_id),
        "the access lines are written"
    );
    let log = std::fs::read_to_string(&log_path)?;
    assert!(access_lines(&log) >= 6, "{log}");
    assert!(log.contains("\"subject\":\"alice\""));
    // Proxied requests say how long the upstream took; answers the gateway made itself, null.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("\"gateway::access\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|v| v["status"] == 200 && v["upstream_ms"].is_number()),
        "{log}"
    );
    assert!(lines.iter().any(|v| v["upstream_ms"].is_null()), "{log}");
    let login_value = login_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    for (what, secret) in [
        ("access token", token.as_str()),
        ("access token signature", token.rsplit('.').next().unwrap_or("x")),
        ("session cookie", session.as_str()),
        ("login cookie", login_value.as_str()),
        ("ID token", id_token.as_str()),
        ("client secret", "web-secret"),
        ("bad token", "SECRETJUNK"),
        ("basic credentials", "dXNlcjpTRUNSRVRQQVNT"),
        ("query string", "SECRETQUERY"),
    ] {
        assert!(secret.len() >= 8, "{what} is a real value");
        assert!(!log.contains(secret), "the {what} is in the log");
    }

    // Lower the level by reloading: access events (info) stop.
    std::fs::write(&path, config(port, admin, &pki, &idp.issuer(), &up, "warn")?)?;
    let reload = http::Request::post("/reload")
        .header("host", "admin")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let r = gateway_tests::send(format!("127.0.0.1:{admin}").parse()?, reload).await?;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let mut quiet = Vec::new();
    for _ in 0..5 {
        let r = b.get(&format!("{base}/app/y")).await?;
        quiet.push(r.headers()["x-request-id"].to_str()?.to_string());
    }
    // A 502 made by the gateway is logged at warn: once it is in the log, so would be the five
    // above had they been logged.
    let r = b.get(&format!("{base}/broken")).await?;
    assert_eq!(r.status(), 502);
    let marker = r.headers()["x-request-id"].to_str()?.to_string();
    assert_eventually!(
        std::fs::read_to_string(&log_path)?.contains(&marker),
        "the 502 is logged at warn"
    );
    let after = std::fs::read_to_string(&log_path)?;
    for id in &quiet {
        assert!(!after.contains(id.as_str()), "no access event at warn");
    }
    assert!(after.contains("log level changed"));
    Ok(())
}
