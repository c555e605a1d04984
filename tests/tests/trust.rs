//! Adaptive trust end to end: a real OpenID provider issues a token to every simulated principal,
//! the gateway runs its embedded engine with a compressed clock, and the traffic simulator sends
//! a benign population with every attack scenario mixed in, each from its own loopback address.

use std::sync::Arc;

use gateway_tests::traffic::{self, Kind, Shape};
use gateway_tests::{get, metric, OidcProvider, TestGateway, Upstream};

/// Simulated time runs this many times faster than real time.
const SCALE: f64 = 120.0;

async fn provider(users: usize) -> anyhow::Result<OidcProvider> {
    let users = users.to_string();
    let mut last = None;
    for _ in 0..3 {
        match OidcProvider::start(gateway_tests::free_port(), &[("USERS", &users), ("TTL", "3600")]).await {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("provider did not start")))
}

async fn tokens(idp: &OidcProvider, n: usize) -> anyhow::Result<Arc<Vec<String>>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(idp.token_for(&format!("user-{i}"), "user-secret").await?);
    }
    Ok(Arc::new(out))
}

async fn ready(gw: &TestGateway) -> anyhow::Result<()> {
    for _ in 0..200 {
        let m = gw.metrics().await?;
        if metric(&m, "gateway_identity_provider_ready", &[("provider", "idp")]) == Some(1.0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("provider keys never loaded")
}

/// A simulation that ran: the gateway (still running), and what every actor saw.
struct Run {
    gw: TestGateway,
    outcomes: Vec<traffic::Outcome>,
    tokens: Arc<Vec<String>>,
    _idp: OidcProvider,
    _up: Upstream,
}

/// Runs `plan` against a gateway whose route has the trust policy `trust`.
async fn run(plan: &traffic::Plan, trust: &str) -> anyhow::Result<Run> {
    let idp = provider(plan.principals).await?;
    let up = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let yaml = traffic::gateway_config("127.0.0.1:0", "127.0.0.1:0", up.addr(), &idp.issuer(), SCALE, trust, "");
    let gw = TestGateway::start(&yaml).await?;
    ready(&gw).await?;
    let tokens = tokens(&idp, plan.principals).await?;
    let outcomes = traffic::drive(plan, gw.addr("http"), "app.test", tokens.clone(), SCALE).await;
    Ok(Run {
        gw,
        outcomes,
        tokens,
        _idp: idp,
        _up: up,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_stepped_up_or_denied_and_benign_users_are_left_alone() -> anyhow::Result<()> {
    let shape = Shape {
        benign: 30,
        per_scenario: 2,
        warmup_min: 40,
        attack_min: 20,
        seed: 11,
    };
    let plan = traffic::plan(shape);
    let Run {
        gw,
        outcomes,
        tokens,
        _idp,
        _up,
    } = run(&plan, "step_up_at: 0.5, deny_at: 0.85").await?;
    let report = traffic::report(&outcomes);
    println!("{report}");
    assert_eq!(report.failed, 0, "{report}");
    for s in &report.scenarios {
        assert_eq!(s.detected, s.attackers, "{}: {report}", s.kind.name());
        assert!(
            s.median_requests.is_some_and(|m| m <= 20),
            "{}: {report}",
            s.kind.name()
        );
    }
    assert_eq!(report.benign_challenged, 0, "{report}");
    assert_eq!(report.benign_denied, 0, "{report}");

    // A denied principal's token is revoked: refused from anywhere until it gets a new one.
    let denied = outcomes
        .iter()
        .find(|o| {
            // Denied after identity (a stuffer's address is refused before it).
            matches!(
                o.kind,
                Kind::Scraping | Kind::Enumeration | Kind::Exfiltration | Kind::Scripted
            ) && o.answers.contains(&traffic::Answer::Denied)
        })
        .and_then(|o| o.principal)
        .expect("an authenticated attacker was denied");
    let again = traffic::Plan {
        actors: vec![traffic::Actor {
            kind: Kind::Benign,
            agent: "Mozilla/5.0 (X11; Linux x86_64) sim/0".into(),
            steps: vec![traffic::Step {
                at_ms: 0,
                target: "/app/home-0".into(),
                cred: traffic::Cred::Principal(denied),
                ip: std::net::Ipv4Addr::new(127, 99, 0, 1),
                attack: false,
            }],
        }],
        principals: plan.principals,
        length_ms: 0,
    };
    let seen = traffic::drive(&again, gw.addr("http"), "app.test", tokens, SCALE).await;
    assert_eq!(seen[0].answers, vec![traffic::Answer::Refused]);

    // The decisions and their reasons are on /metrics and in the admin API.
    let m = gw.metrics().await?;
    let count = |decision: &str| {
        metric(
            &m,
            "gateway_trust_decisions_total",
            &[("route", "app"), ("decision", decision), ("mode", "enforce")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        count("allow") > 0.0 && count("step_up") > 0.0 && count("deny") > 0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "gateway_trust_reasons_total",
            &[("route", "app"), ("decision", "deny"), ("reason", "auth_failures")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        metric(&m, "gateway_engine_entities", &[]).is_some_and(|n| n > 0.0),
        "{m}"
    );
    gateway_tests::assert_eventually!(
        metric(&gw.metrics().await?, "gateway_engine_events_total", &[]) == Some(report.requests as f64 + 1.0),
        "every request (the plan's and the revoked token's) reaches the engine"
    );

    // A stuffer now: the riskiest entity, explained.
    let stuffer = traffic::Plan {
        actors: vec![traffic::Actor {
            kind: Kind::Stuffing,
            agent: "python-requests/2.31.0".into(),
            steps: (0..15u32)
                .map(|i| traffic::Step {
                    at_ms: u64::from(i) * 1000,
                    target: "/app/home-0".into(),
                    cred: traffic::Cred::Garbage(i),
                    ip: std::net::Ipv4Addr::new(127, 41, 0, 1),
                    attack: true,
                })
                .collect(),
        }],
        principals: 0,
        length_ms: 15_000,
    };
    let seen = traffic::drive(&stuffer, gw.addr("http"), "app.test", Arc::new(Vec::new()), SCALE).await;
    assert!(seen[0].to_detection().is_some(), "{:?}", seen[0].answers);
    let admin = gw.gw.admin_addr();
    let top = gateway_tests::json(&get(&format!("http://{admin}/risk/top?limit=5")).await?);
    assert_eq!(top["stale"], false, "{top}");
    let first = &top["entities"][0];
    assert_eq!(first["entity"], "client:127.41.0.1", "{top}");
    assert!(first["score"].as_f64().unwrap_or(0.0) > 0.85, "{top}");
    assert_eq!(first["reasons"][0]["signal"], "auth_failures", "{top}");
    assert!(
        first["reasons"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("usual")),
        "{top}"
    );
    let entity = first["entity"].as_str().unwrap_or_default().replace(':', "%3A");
    let one = gateway_tests::json(&get(&format!("http://{admin}/risk/{entity}")).await?);
    assert_eq!(one["entity"], first["entity"]);
    assert!(one["history"].as_array().is_some_and(|h| !h.is_empty()), "{one}");
    let bad = get(&format!("http://{admin}/risk/user:nobody")).await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_decides_and_records_but_allows() -> anyhow::Result<()> {
    let shape = Shape {
        benign: 6,
        per_scenario: 1,
        warmup_min: 40,
        attack_min: 10,
        seed: 5,
    };
    let mut plan = traffic::plan(shape);
    plan.actors
        .retain(|a| matches!(a.kind, Kind::Benign | Kind::Scraping | Kind::Enumeration));
    let Run {
        gw,
        outcomes,
        _idp,
        _up,
        ..
    } = run(&plan, "mode: shadow").await?;
    for o in &outcomes {
        assert!(
            o.answers.iter().all(|a| *a == traffic::Answer::Allowed),
            "{:?} was refused in shadow mode",
            o.kind
        );
    }
    let m = gw.metrics().await?;
    let shadow = |decision: &str| {
        metric(
            &m,
            "gateway_trust_decisions_total",
            &[("route", "app"), ("decision", decision), ("mode", "shadow")],
        )
        .unwrap_or(0.0)
    };
    assert!(shadow("step_up") + shadow("deny") > 0.0, "{m}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_engine_each_route_follows_its_on_unavailable() -> anyhow::Result<()> {
    let up = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
upstreams: [{{ name: app, endpoints: ["http://{}"] }}]
routes:
  - {{ name: open, upstream: app, match: {{ path_prefix: /open }}, trust: {{ on_unavailable: last_known }} }}
  - {{ name: closed, upstream: app, match: {{ path_prefix: /closed }}, trust: {{ on_unavailable: fail_closed }} }}
engine: {{ enabled: false }}
"#,
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    let base = format!("http://{}", gw.addr("http"));
    assert_eq!(get(&format!("{base}/open/x")).await?.status(), 200);
    let closed = get(&format!("{base}/closed/x")).await?;
    assert_eq!(closed.status(), 503);
    assert_eq!(
        gateway_tests::json(&closed)["type"],
        "urn:gateway:problem:risk-unavailable"
    );
    let m = gw.metrics().await?;
    for (route, policy) in [("open", "last_known"), ("closed", "fail_closed")] {
        assert_eq!(
            metric(
                &m,
                "gateway_trust_unavailable_total",
                &[("route", route), ("policy", policy)]
            ),
            Some(1.0),
            "{m}"
        );
    }
    Ok(())
}
