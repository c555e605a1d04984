//! Dashboards and alerts against the real servers: Prometheus (Debian's package) scrapes a
//! running gateway under generated load and every dashboard panel query, template variable
//! query and recording rule returns data; Prometheus with the alert rules on a faster clock and
//! Alertmanager with `alerts/alertmanager.yml` deliver a burn-rate page for an upstream failure
//! burst and a runtime anomaly ticket to a webhook receiver, then their resolutions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::monitoring::{repo, scale_durations, Alertmanager, Prometheus, Webhook};
use gateway_tests::{metric, request, send, OidcProvider, TestGateway, TestPki, Upstream};
use http_body_util::Full;
use tokio::time::Instant;

async fn provider() -> anyhow::Result<OidcProvider> {
    let mut last = None;
    for _ in 0..3 {
        match OidcProvider::start(gateway_tests::free_port(), &[("USERS", "4"), ("TTL", "3600")]).await {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("provider did not start")))
}

/// A gateway with the routes `alerts/slo-config.yaml` names (web, api, api-admin), a bearer
/// route, a route in shadow mode and a TLS listener.
fn gateway_config(up: &Upstream, issuer: &str, pki: &TestPki, engine: &str) -> anyhow::Result<String> {
    let (cert, key) = pki.leaf("leaf", &["localhost"])?;
    Ok(format!(
        r#"
listeners:
  - {{ name: http, address: "127.0.0.1:0" }}
  - {{ name: https, address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }} }}
admin: {{ address: "127.0.0.1:0" }}
identity:
  providers:
    - {{ name: idp, issuer: "{issuer}", audiences: [api], algorithms: [ES256], require_at_jwt: true, login: {{ client_id: gateway, client_secret: s }} }}
upstreams: [{{ name: app, endpoints: ["http://{up}"] }}, {{ name: app-next, endpoints: ["http://{up}"] }}]
routes:
  - {{ name: web, upstream: app, trust: {{ step_up_at: 0.5, deny_at: 0.85 }} }}
  - name: shop
    upstream: app
    match: {{ host: shop.test }}
    split: [{{ upstream: app-next, percent: 10 }}]
    rate_limit: {{ rate: 100/s }}
    cors: {{ allow_origins: ["*"] }}
    compress: {{}}
  - {{ name: api, upstream: app, match: {{ host: api.test }}, auth: {{ bearer: idp }}, trust: {{ step_up_at: 0.5, deny_at: 0.85 }} }}
  - {{ name: api-admin, upstream: app, match: {{ host: admin.test }}, trust: {{ mode: shadow, step_up_at: 0.5, deny_at: 0.85 }} }}
engine: {{ {engine} }}
telemetry: {{ runtime_interval: 100ms, task_sampling: 1 }}
"#,
        cert.display(),
        key.display(),
        up = up.addr()
    ))
}

fn bearer(host: &str, path: &str, token: &str) -> http::Request<Full<Bytes>> {
    let mut r = request(host, path);
    r.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

async fn provider_ready(gw: &TestGateway) -> anyhow::Result<()> {
    gateway_tests::assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_identity_provider_ready",
            &[("provider", "idp")]
        ) == Some(1.0),
        "the provider's keys load"
    );
    Ok(())
}

fn prometheus_config(
    scrape: std::net::SocketAddr,
    rules: &[std::path::PathBuf],
    alertmanager: Option<std::net::SocketAddr>,
) -> String {
    let rules = rules
        .iter()
        .map(|r| format!("\"{}\"", r.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let alerting = alertmanager
        .map(|a| format!("alerting:\n  alertmanagers: [{{ static_configs: [{{ targets: [\"{a}\"] }}] }}]\n"))
        .unwrap_or_default();
    format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{rules}]\n{alerting}scrape_configs:\n  - job_name: gateway\n    static_configs: [{{ targets: [\"{scrape}\"] }}]\n"
    )
}

/// Every rule file in `alerts/`.
fn rule_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("alerts"))
        .expect("alerts/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    files
}

/// A query with the dashboard's template variables replaced as Grafana would: `$instance` by
/// the scraped instance, the multi-value variables by their "All" value, the interval
/// variables by durations that cover several 1 s scrapes.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$__range", "1m")
        .replace("$__interval", "2s")
        .replace("$instance", instance)
        .replace("$route", ".*")
        .replace("$scope", ".*")
        .replace("$signal", ".*")
}

/// `label_values(metric{sel}, label)` as the query Grafana's Prometheus data source runs for it.
fn variable_query(q: &str) -> Option<String> {
    let inner = q.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("group by ({}) ({})", label.trim(), selector.trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_and_recording_rule_returns_data() -> anyhow::Result<()> {
    let idp = provider().await?;
    let up = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let pki = TestPki::new()?;
    let gw = TestGateway::start(&gateway_config(
        &up,
        &idp.issuer(),
        &pki,
        "warmup: 10, alerts: { webhooks: [\"http://127.0.0.1:9/hook\"] }",
    )?)
    .await?;
    provider_ready(&gw).await?;
    let (good, attacker) = (
        idp.token_for("user-0", "user-secret").await?,
        idp.token_for("user-1", "user-secret").await?,
    );
    let prom = Prometheus::start(&prometheus_config(gw.admin_addr(), &rule_files(), None)).await?;
    let instance = gw.admin_addr().to_string();

    // Traffic on every route for at least 12 s (a dozen scrapes): successes, upstream 5xx,
    // refused bearer tokens, a shadow-mode route.
    let http = gw.addr("http");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        for r in [
            request("web.test", "/x"),
            bearer("api.test", "/x", &good),
            bearer("api.test", "/status/503", &good),
            request("api.test", "/x"),
            request("admin.test", "/x"),
        ] {
            send(http, r).await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An enumeration by a token holder ends in a deny that revokes the subject; one by an
    // anonymous client on the web route ends in a deny too.
    for (host, token) in [("api.test", Some(&attacker)), ("web.test", None)] {
        let mut denied = false;
        for i in 0..200 {
            let path = format!("/status/404/probe-{i}");
            let r = match token {
                Some(t) => bearer(host, &path, t),
                None => request(host, &path),
            };
            if send(http, r).await?.status() == 403 {
                denied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(denied, "the enumeration on {host} was never denied");
    }
    // The admin API revokes a subject (gateway_identity_revocations_total).
    let revoke = http::Request::post("/identity/revoke?subject=user-3")
        .header("host", instance.as_str())
        .body(Full::new(Bytes::new()))?;
    assert_eq!(send(gw.admin_addr(), revoke).await?.status(), 200);
    // A few more scrapes after the last events.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut failures = Vec::new();
    let mut queries = 0;
    for entry in std::fs::read_dir(repo().join("dashboards"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let mut exprs = Vec::new();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(q) = v["query"]["query"].as_str() {
                let q = variable_query(q).unwrap_or_else(|| panic!("{name}: variable {} query {q}", v["name"]));
                exprs.push((format!("variable {}", v["name"]), q));
            }
        }
        let mut panels = d["panels"].as_array().cloned().unwrap_or_default();
        let nested: Vec<_> = panels
            .iter()
            .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default())
            .collect();
        panels.extend(nested);
        for p in &panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                exprs.push((
                    format!("panel \"{}\" {}", p["title"].as_str().unwrap_or(""), t["refId"]),
                    expr.to_string(),
                ));
            }
        }
        for (what, expr) in exprs {
            let q = substitute(&expr, &instance);
            queries += 1;
            match prom.query(&q).await {
                Ok(r) if r.is_empty() => failures.push(format!("{name}: {what}: no data for {q}")),
                Ok(_) => {}
                Err(e) => failures.push(format!("{name}: {what}: {e} for {q}")),
            }
        }
        // Annotation queries must be valid PromQL (they return data only during anomalies).
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if let Some(expr) = a["target"]["expr"].as_str() {
                if let Err(e) = prom.query(&substitute(expr, &instance)).await {
                    failures.push(format!("{name}: annotation {}: {e}", a["name"]));
                }
            }
        }
    }
    // Every recording rule: its expression returns data, and Prometheus evaluates it cleanly.
    let groups = prom.api("rules", &[]).await?;
    let mut rules = 0;
    for g in groups["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            if r["health"] == "err" {
                failures.push(format!("rule {} in {}: {}", r["name"], g["file"], r["lastError"]));
            }
            if r["type"] != "recording" {
                continue;
            }
            rules += 1;
            let expr = r["query"].as_str().unwrap_or_default();
            match prom.query(expr).await {
                Ok(v) if v.is_empty() => {
                    failures.push(format!("recording rule {} {}: no data", r["name"], r["labels"]))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("recording rule {}: {e}", r["name"])),
            }
        }
    }
    println!("{queries} dashboard queries and {rules} recording rules run against Prometheus");
    assert!(queries >= 100 && rules >= 30, "{queries} queries, {rules} rules");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// `alerts/alertmanager.yml` with its receivers pointed at `hook` and its waits shortened to a
/// second.
fn alertmanager_config(hook: &Webhook) -> anyhow::Result<String> {
    let example = std::fs::read_to_string(repo().join("alerts/alertmanager.yml"))?;
    let config = example
        .replace("http://127.0.0.1:9095", &format!("http://{}", hook.addr))
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_wait: 10s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 1s");
    anyhow::ensure!(
        config.matches("group_wait: 1s").count() == 2 && config.contains("group_interval: 1s"),
        "alerts/alertmanager.yml changed shape"
    );
    Ok(config)
}

/// Waits for the runtime's series to learn (the engine's warm-up), with traffic going on.
async fn warmed_up(gw: &TestGateway) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = gw.metrics().await?;
        let runtime_scored = metric(&m, "gateway_baseline_score", &[("scope", "runtime")]).is_some();
        if runtime_scored && metric(&m, "gateway_runtime_anomaly", &[]) == Some(0.0) {
            // The series exist from the first tick; their warm-up (`engine.warmup: 20` ticks of
            // 50 ms) ends a second later, and the runtime's normal is what it learns meanwhile.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the runtime baseline never warmed up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook_and_resolve() -> anyhow::Result<()> {
    // Alertmanager with the example config, its receivers pointed at the webhook receiver and
    // its waits shortened.
    let hook = Webhook::start().await?;
    let am_config = alertmanager_config(&hook)?;
    let am = Alertmanager::start(&am_config).await?;

    // The gateway: the api route has a pool of its own whose upstream can be made to fail.
    let up = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
upstreams:
  - {{ name: app, endpoints: ["http://{up}"] }}
  - {{ name: api, endpoints: ["http://{up}"], health: {{ consecutive_failures: 5, ejection_time: 1s }} }}
routes:
  - {{ name: web, upstream: app }}
  - {{ name: api, upstream: api, match: {{ host: api.test }} }}
  - {{ name: api-admin, upstream: api, match: {{ host: admin.test }} }}
engine: {{ warmup: 20, sustained: 3 }}
telemetry: {{ runtime_interval: 50ms, task_sampling: 1 }}
"#,
        up = up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;

    // Every rule file, on a clock 60 times faster: windows and `for` durations divided by 60
    // (the 1h/5m page becomes 60s/5s, `for: 2m` becomes 2s), evaluated every second.
    let rules_dir = tempfile::tempdir()?;
    let mut rules = Vec::new();
    for f in rule_files() {
        let scaled = rules_dir.path().join(f.file_name().unwrap_or_default());
        std::fs::write(&scaled, scale_durations(&std::fs::read_to_string(&f)?, 60))?;
        rules.push(scaled);
    }
    let prom = Prometheus::start(&prometheus_config(gw.admin_addr(), &rules, Some(am.addr()))).await?;

    // Clients keep calling both routes; `failing` makes the api's upstream answer 503.
    let failing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let http = gw.addr("http");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (failing, stop) = (failing.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let path = if failing.load(Ordering::Relaxed) {
                        "/status/503"
                    } else {
                        "/x"
                    };
                    let _ = send(http, request("api.test", path)).await;
                    let _ = send(http, request("web.test", "/x")).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    warmed_up(&gw).await?;
    // Both SLO windows of the page (60 s and 5 s) hold healthy traffic first.
    gateway_tests::assert_eventually!(
        prom.query("gateway:slo_errors:ratio_rate5m{slo=\"api\",objective=\"availability\"} == 0")
            .await
            .is_ok_and(|v| !v.is_empty()),
        "Prometheus records the api objective's error ratio"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let wait = Duration::from_secs(60);

    // 1. Blocked workers make a runtime anomaly: a ticket, then its resolution. Tasks hold both
    //    workers 40 ms at a time while more clients call: their requests wait for a worker.
    let anomaly = |d: &gateway_tests::monitoring::Delivered, status: &str| {
        d.path == "/tickets" && d.status == status && d.labels["alertname"] == "GatewayRuntimeAnomaly"
    };
    let blocking = Arc::new(AtomicBool::new(true));
    let fault = Instant::now();
    let blockers: Vec<_> = (0..4)
        .map(|_| {
            let blocking = blocking.clone();
            tokio::spawn(async move {
                while blocking.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(40));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let hammer: Vec<_> = (0..4)
        .map(|_| {
            let blocking = blocking.clone();
            tokio::spawn(async move {
                while blocking.load(Ordering::Relaxed) {
                    let _ = send(http, request("web.test", "/x")).await;
                }
            })
        })
        .collect();
    let fired = hook
        .expect("the runtime anomaly ticket", wait, |d| anomaly(d, "firing"))
        .await;
    let runtime_fired = fired.at - fault;
    assert_eq!(fired.labels["severity"], "ticket");
    let healed = Instant::now();
    blocking.store(false, Ordering::Relaxed);
    for b in blockers.into_iter().chain(hammer) {
        b.await?;
    }
    let resolved = hook
        .expect("the runtime anomaly resolution", wait, |d| anomaly(d, "resolved"))
        .await;
    let runtime_resolved = resolved.at - healed;

    // 2. An upstream failure burst pages for the api objective's fast burn.
    let page = |d: &gateway_tests::monitoring::Delivered, status: &str| {
        d.path == "/pager"
            && d.status == status
            && d.labels["alertname"] == "SLOErrorBudgetBurn"
            && d.labels["slo"] == "api"
            && d.labels["long_window"] == "1h"
    };
    let fault = Instant::now();
    failing.store(true, Ordering::Relaxed);
    let fired = hook.expect("the burn-rate page", wait, |d| page(d, "firing")).await;
    let burn_fired = fired.at - fault;
    assert_eq!(fired.labels["severity"], "page");
    let healed = Instant::now();
    failing.store(false, Ordering::Relaxed);
    let resolved = hook
        .expect("the page's resolution", wait, |d| page(d, "resolved"))
        .await;
    let burn_resolved = resolved.at - healed;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    println!(
        "fault to webhook: burn-rate page {:.1} s, resolved {:.1} s after the fault ended; runtime anomaly ticket {:.1} s, resolved {:.1} s after",
        burn_fired.as_secs_f64(),
        burn_resolved.as_secs_f64(),
        runtime_fired.as_secs_f64(),
        runtime_resolved.as_secs_f64()
    );
    Ok(())
}

/// While an SLO pages, Alertmanager holds the route anomaly alert of the same objective
/// (`alerts/alertmanager.yml`'s inhibition) but not one of the other objective.
#[tokio::test]
async fn an_slo_page_inhibits_the_route_anomaly_of_its_objective() -> anyhow::Result<()> {
    let hook = Webhook::start().await?;
    let config = alertmanager_config(&hook)?;
    let am = Alertmanager::start(&config).await?;
    let alert =
        |labels: serde_json::Value| serde_json::json!({ "labels": labels, "annotations": { "summary": "test" } });
    am.post(&serde_json::json!([
        alert(serde_json::json!({ "alertname": "SLOErrorBudgetBurn", "severity": "page", "slo": "api", "objective": "availability", "long_window": "1h", "short_window": "5m" })),
        alert(serde_json::json!({ "alertname": "GatewayRouteErrorAnomaly", "severity": "ticket", "objective": "availability", "scope": "route:api", "instance": "gw:9901" })),
        alert(serde_json::json!({ "alertname": "GatewayRouteLatencyAnomaly", "severity": "ticket", "objective": "latency", "scope": "route:api", "instance": "gw:9901" })),
    ]))
    .await?;
    let state = |alerts: &[serde_json::Value], name: &str| {
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .map(|a| a["status"]["state"].as_str().unwrap_or("").to_string())
    };
    gateway_tests::assert_eventually!(
        {
            let alerts = am.alerts().await?;
            state(&alerts, "GatewayRouteErrorAnomaly").as_deref() == Some("suppressed")
                && state(&alerts, "GatewayRouteLatencyAnomaly").as_deref() == Some("active")
                && state(&alerts, "SLOErrorBudgetBurn").as_deref() == Some("active")
        },
        "the error anomaly is inhibited by the availability page, the latency one is not: {:?}",
        am.alerts().await?
    );
    Ok(())
}

/// Without Prometheus: the engine posts its runtime anomaly to Alertmanager's v2 API (which
/// delivers it to its receiver) and to a webhook of its own, once per start and once per end,
/// though it sends the firing alert to Alertmanager again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_posts_its_anomalies_to_alertmanager_and_a_webhook() -> anyhow::Result<()> {
    let hook = Webhook::start().await?;
    let am_config = alertmanager_config(&hook)?;
    let am = Alertmanager::start(&am_config).await?;
    let up = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
upstreams: [{{ name: app, endpoints: ["http://{}"] }}]
routes: [{{ name: web, upstream: app }}]
engine:
  warmup: 20
  sustained: 3
  alerts:
    alertmanagers: ["http://{}"]
    webhooks: ["http://{}/direct"]
    resend_every: 300ms
    instance: gw-test
telemetry: {{ runtime_interval: 50ms, task_sampling: 1 }}
"#,
        up.addr(),
        am.addr(),
        hook.addr
    );
    let gw = TestGateway::start(&yaml).await?;
    let http = gw.addr("http");
    for _ in 0..30 {
        send(http, request("web.test", "/x")).await?;
    }
    warmed_up(&gw).await?;

    let blocking = Arc::new(AtomicBool::new(true));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let blocking = blocking.clone();
            tokio::spawn(async move {
                while blocking.load(Ordering::Relaxed) {
                    if i < 4 {
                        std::thread::sleep(Duration::from_millis(40));
                        tokio::task::yield_now().await;
                    } else {
                        let _ = send(http, request("web.test", "/x")).await;
                    }
                }
            })
        })
        .collect();
    let runtime = |d: &gateway_tests::monitoring::Delivered, path: &str, status: &str| {
        d.path == path
            && d.status == status
            && d.labels["alertname"] == "GatewayRuntimeAnomaly"
            && d.labels["instance"] == "gw-test"
            && d.labels["severity"] == "ticket"
    };
    let wait = Duration::from_secs(60);
    hook.expect("the engine's firing alert", wait, |d| runtime(d, "/direct", "firing"))
        .await;
    // Alertmanager holds it (from the engine, not from any Prometheus) and routes it as a ticket.
    hook.expect("Alertmanager's ticket for it", wait, |d| {
        runtime(d, "/tickets", "firing")
    })
    .await;
    // Let the engine send it to Alertmanager a few more times while it lasts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking.store(false, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    hook.expect("the engine's resolution", wait, |d| runtime(d, "/direct", "resolved"))
        .await;
    hook.expect("Alertmanager's resolution", wait, |d| {
        runtime(d, "/tickets", "resolved")
    })
    .await;

    // Deduplicated: once the engine holds no alert firing, the webhook has seen each anomaly
    // (another may have started while the blocking wound down) start once and end once, in
    // turn, however often the firing alert went to Alertmanager.
    let statuses = || -> Vec<String> {
        hook.delivered()
            .into_iter()
            .filter(|d| d.path == "/direct" && d.labels["alertname"] == "GatewayRuntimeAnomaly")
            .map(|d| d.status)
            .collect()
    };
    let deadline = Instant::now() + wait;
    let (m, statuses) = loop {
        let m = gw.metrics().await?;
        let raised = metric(&m, "gateway_runtime_anomalies_total", &[]).unwrap_or(0.0);
        let seen = statuses();
        let posted = metric(
            &m,
            "gateway_engine_alerts_total",
            &[("target", "webhook"), ("result", "sent")],
        );
        let settled = metric(&m, "gateway_engine_alerts_firing", &[]) == Some(0.0)
            && seen.len() as f64 == 2.0 * raised
            && posted >= Some(seen.len() as f64);
        if settled {
            break (m, seen);
        }
        assert!(Instant::now() < deadline, "{seen:?} for {raised} anomalies");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s, if i % 2 == 0 { "firing" } else { "resolved" }, "{statuses:?}");
    }
    let sent = |target: &str, result: &str| {
        metric(
            &m,
            "gateway_engine_alerts_total",
            &[("target", target), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        sent("alertmanager", "sent") > statuses.len() as f64,
        "re-sent while firing:\n{m}"
    );
    // Route anomalies of the blocked runtime may have been posted too.
    assert!(sent("webhook", "sent") >= statuses.len() as f64);
    assert_eq!(
        sent("alertmanager", "failed") + sent("webhook", "failed") + sent("queue", "dropped"),
        0.0
    );
    assert_eq!(metric(&m, "gateway_engine_alerts_firing", &[]), Some(0.0));
    Ok(())
}
