//! Dashboards and alerts against the real servers: Prometheus (Debian's package) scrapes a
//! running gateway under generated load and every dashboard panel query, template variable
//! query and recording rule returns data; Prometheus with the alert rules on a faster clock and
//! Alertmanager with `alerts/alertmanager.yml` deliver a burn-rate page for an upstream failure
//! burst and a runtime anomaly ticket to a webhook receiver, then their resolutions.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
upstreams: [{{ name: app, endpoints: ["http://{}"] }}]
routes:
  - {{ name: web, upstream: app, trust: {{ step_up_at: 0.5, deny_at: 0.85 }} }}
  - {{ name: api, upstream: app, match: {{ host: api.test }}, auth: {{ bearer: idp }}, trust: {{ step_up_at: 0.5, deny_at: 0.85 }} }}
  - {{ name: api-admin, upstream: app, match: {{ host: admin.test }}, trust: {{ mode: shadow, step_up_at: 0.5, deny_at: 0.85 }} }}
engine: {{ {engine} }}
telemetry: {{ runtime_interval: 100ms, task_sampling: 1 }}
"#,
        cert.display(),
        key.display(),
        up.addr()
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
    let gw = TestGateway::start(&gateway_config(&up, &idp.issuer(), &pki, "warmup: 10")?).await?;
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
