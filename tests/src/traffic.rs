//! A traffic simulator for the adaptive trust loop: a benign population of principals with
//! their own habits, and attack scenarios mixed in, planned deterministically from a seed and
//! driven against a real gateway over loopback.
//!
//! Time is compressed: the plan is in simulated milliseconds, and the driver sends each request
//! at `sim_ms / scale` of real time; the gateway's engine runs its entity clock `scale` times
//! faster (`engine.time_scale`), so both agree on what a minute is. Every actor has its own
//! source address on 127.0.0.0/8 (Linux answers on all of it) and its own user agent.
//!
//! Each request is classified by what the gateway answered: allowed, asked to step up (401 with
//! `insufficient_user_authentication`), denied on risk (403 `risk-denied`), or refused for its
//! credentials (401 otherwise).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What an actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A person going about their day.
    Benign,
    /// A benign principal whose credentials an attacker uses (not counted as benign).
    Victim,
    /// Many failed logins from few addresses, now and then a valid stolen token.
    Stuffing,
    /// A victim's token replayed from a new address and user agent.
    StolenToken,
    /// Fast, breadth-first over many paths.
    Scraping,
    /// 404 bursts looking for endpoints.
    Enumeration,
    /// Response bytes growing request after request.
    Exfiltration,
    /// A script with machine-regular timing.
    Scripted,
}

// === impl Kind ===

impl Kind {
    /// Every attack scenario.
    pub const ATTACKS: [Kind; 6] = [
        Kind::Stuffing,
        Kind::StolenToken,
        Kind::Scraping,
        Kind::Enumeration,
        Kind::Exfiltration,
        Kind::Scripted,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Benign => "benign",
            Kind::Victim => "victim",
            Kind::Stuffing => "credential stuffing",
            Kind::StolenToken => "stolen token",
            Kind::Scraping => "scraping",
            Kind::Enumeration => "enumeration",
            Kind::Exfiltration => "slow exfiltration",
            Kind::Scripted => "machine-regular client",
        }
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cred {
    /// The token of principal `n`.
    Principal(usize),
    /// A token that verifies for nobody.
    Garbage(u32),
}

/// One planned request.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When, simulated milliseconds from the start.
    pub at_ms: u64,
    /// Path and query.
    pub target: String,
    /// Credentials.
    pub cred: Cred,
    /// Source address.
    pub ip: Ipv4Addr,
    /// Part of an attack (from the attack's first request on).
    pub attack: bool,
}

/// One actor and its requests, in time order.
#[derive(Debug, Clone)]
pub struct Actor {
    /// What it is.
    pub kind: Kind,
    /// User agent.
    pub agent: String,
    /// Its requests.
    pub steps: Vec<Step>,
}

/// The size of a simulation.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Benign principals.
    pub benign: usize,
    /// Attackers per scenario.
    pub per_scenario: usize,
    /// Simulated minutes of benign traffic before attacks start.
    pub warmup_min: u64,
    /// Simulated minutes attacks may start in, and run.
    pub attack_min: u64,
    /// Seed.
    pub seed: u64,
}

/// A plan: the actors and how many principals (tokens `user-0` .. `user-{principals-1}`) it uses.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Everyone.
    pub actors: Vec<Actor>,
    /// Principals used.
    pub principals: usize,
    /// Simulated length, milliseconds.
    pub length_ms: u64,
}

const CATALOG: usize = 40;
const MIN: u64 = 60_000;

fn page(i: usize) -> String {
    const NAMES: [&str; 8] = [
        "home", "orders", "profile", "search", "cart", "help", "reports", "settings",
    ];
    format!("/app/{}-{}", NAMES[i % NAMES.len()], i / NAMES.len())
}

fn addr(group: u8, n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, group, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// How a person (or an integration) uses the service.
struct Habit {
    pages: Vec<usize>,
    mean_gap_ms: f64,
    size: u64,
    /// Requests per page view at most (power users open many at once).
    burst: usize,
}

fn habit(rng: &mut fastrand::Rng) -> Habit {
    let n = rng.usize(4..=8);
    let mut pages: Vec<usize> = (0..CATALOG).collect();
    rng.shuffle(&mut pages);
    pages.truncate(n);
    Habit {
        pages,
        mean_gap_ms: rng.f64() * 150_000.0 + 45_000.0,
        size: rng.u64(1_000..30_000),
        burst: 3,
    }
}

/// A scheduled integration: the same few calls at a fixed period, from the start.
fn integration(rng: &mut fastrand::Rng, h: &Habit, p: usize, ip: Ipv4Addr, until: u64) -> Vec<Step> {
    let period = rng.u64(20_000..60_000);
    let mut t = rng.u64(0..period);
    let mut steps = Vec::new();
    let mut i = 0;
    while t < until {
        steps.push(Step {
            at_ms: t,
            target: format!("{}?size={}", page(h.pages[i % h.pages.len()]), h.size),
            cred: Cred::Principal(p),
            ip,
            attack: false,
        });
        i += 1;
        t += period;
    }
    steps
}

fn exp_gap(rng: &mut fastrand::Rng, mean: f64) -> u64 {
    (-(1.0 - rng.f64()).ln() * mean).max(1000.0) as u64
}

/// A person's requests from `from` to `until` (simulated ms).
fn human(rng: &mut fastrand::Rng, h: &Habit, p: usize, ip: Ipv4Addr, from: u64, until: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut t = from + exp_gap(rng, h.mean_gap_ms);
    // One in ten moves networks once (same browser).
    let roam = (rng.u8(..) < 26).then(|| (from + rng.u64(0..until.saturating_sub(from).max(1)), addr(60, p)));
    while t < until {
        let ip = match roam {
            Some((at, other)) if t >= at => other,
            _ => ip,
        };
        // A page view: one to a few requests within seconds.
        let burst = if rng.u8(..) < 50 { rng.usize(2..=h.burst) } else { 1 };
        for b in 0..burst {
            if b > 0 {
                t += rng.u64(300..1500);
            }
            if t >= until {
                break;
            }
            let roll = rng.u8(..);
            let target = if roll < 3 {
                format!("/status/404/p{}", rng.u32(..1000))
            } else if roll < 10 {
                format!("{}?size={}", page(rng.usize(..CATALOG)), h.size)
            } else {
                let size = h.size * rng.u64(80..=120) / 100;
                format!("{}?size={size}", page(h.pages[rng.usize(..h.pages.len())]))
            };
            steps.push(Step {
                at_ms: t,
                target,
                cred: Cred::Principal(p),
                ip,
                attack: false,
            });
        }
        t += exp_gap(rng, h.mean_gap_ms);
    }
    steps
}

/// Plans a simulation.
pub fn plan(shape: Shape) -> Plan {
    let mut rng = fastrand::Rng::with_seed(shape.seed);
    let start_attacks = shape.warmup_min * MIN;
    let end = start_attacks + shape.attack_min * MIN;
    let mut actors = Vec::new();
    let mut principals = 0usize;
    let mut next_principal = || {
        principals += 1;
        principals - 1
    };
    for b in 0..shape.benign {
        let p = next_principal();
        let mut h = habit(&mut rng);
        // One in twenty is a scheduled integration; one in ten a power user who opens many
        // pages at once and browses more of the catalogue.
        let (agent, steps) = match b % 20 {
            0 => (
                format!("integration/{p}"),
                integration(&mut rng, &h, p, addr(10, p), end),
            ),
            1 | 2 => {
                h.burst = 10;
                h.pages = (0..CATALOG).filter(|i| i % 3 == p % 3).collect();
                (
                    format!("Mozilla/5.0 (X11; Linux x86_64) sim/{}", p % 7),
                    human(&mut rng, &h, p, addr(10, p), 0, end),
                )
            }
            _ => (
                format!("Mozilla/5.0 (X11; Linux x86_64) sim/{}", p % 7),
                human(&mut rng, &h, p, addr(10, p), 0, end),
            ),
        };
        actors.push(Actor {
            kind: Kind::Benign,
            agent,
            steps,
        });
    }
    for (s, kind) in Kind::ATTACKS.into_iter().enumerate() {
        for a in 0..shape.per_scenario {
            let n = s * 1000 + a;
            let begin = start_attacks + rng.u64(0..(shape.attack_min * MIN / 3).max(1));
            let p = next_principal();
            let h = habit(&mut rng);
            let ip = addr(10, p);
            let agent = format!("Mozilla/5.0 (X11; Linux x86_64) sim/{}", p % 7);
            match kind {
                Kind::Stuffing | Kind::StolenToken => {
                    // The victim lives its normal life throughout.
                    actors.push(Actor {
                        kind: Kind::Victim,
                        agent,
                        steps: human(&mut rng, &h, p, ip, 0, end),
                    });
                    let attacker_ip = addr(40, n);
                    let mut steps = Vec::new();
                    let mut t = begin;
                    let count = if kind == Kind::Stuffing { 120 } else { 40 };
                    for i in 0..count {
                        let cred = if kind == Kind::Stuffing && i % 20 != 19 {
                            Cred::Garbage(rng.u32(..))
                        } else {
                            Cred::Principal(p)
                        };
                        steps.push(Step {
                            at_ms: t,
                            target: format!("{}?size={}", page(rng.usize(..CATALOG)), h.size),
                            cred,
                            ip: attacker_ip,
                            attack: true,
                        });
                        t += if kind == Kind::Stuffing {
                            rng.u64(500..1500)
                        } else {
                            exp_gap(&mut rng, 20_000.0)
                        };
                    }
                    actors.push(Actor {
                        kind,
                        agent: if kind == Kind::Stuffing {
                            "python-requests/2.31.0".into()
                        } else {
                            "curl/8.5.0".into()
                        },
                        steps,
                    });
                }
                Kind::Scraping | Kind::Enumeration | Kind::Exfiltration | Kind::Scripted => {
                    let mut steps = human(&mut rng, &h, p, ip, 0, begin);
                    let mut t = begin;
                    let count = match kind {
                        Kind::Scraping => 150,
                        Kind::Enumeration => 100,
                        Kind::Exfiltration => 40,
                        _ => 80,
                    };
                    let mut size = h.size as f64;
                    for i in 0..count {
                        let target = match kind {
                            Kind::Scraping => format!("/catalog/item-{i}?size={}", h.size),
                            Kind::Enumeration if rng.u8(..) < 205 => format!(
                                "/status/404/{}-{i}",
                                ["admin", "api", "backup", "debug", "config"][i % 5]
                            ),
                            Kind::Exfiltration => {
                                size *= 1.25;
                                format!("{}?size={}", page(h.pages[i % h.pages.len()]), size as u64)
                            }
                            _ => format!("{}?size={}", page(h.pages[i % h.pages.len()]), h.size),
                        };
                        steps.push(Step {
                            at_ms: t,
                            target,
                            cred: Cred::Principal(p),
                            ip,
                            attack: true,
                        });
                        t += match kind {
                            Kind::Scraping => rng.u64(300..900),
                            Kind::Enumeration => rng.u64(1000..3000),
                            Kind::Exfiltration => exp_gap(&mut rng, h.mean_gap_ms),
                            _ => 12_000,
                        };
                    }
                    actors.push(Actor { kind, agent, steps });
                }
                Kind::Benign | Kind::Victim => {}
            }
        }
    }
    let length_ms = actors
        .iter()
        .filter_map(|a| a.steps.last().map(|s| s.at_ms))
        .max()
        .unwrap_or(0);
    Plan {
        actors,
        principals,
        length_ms,
    }
}

/// What the gateway answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Forwarded (whatever the upstream said).
    Allowed,
    /// 401 asking for a stronger or fresher authentication.
    StepUp,
    /// 403 on risk.
    Denied,
    /// 401 for the credentials themselves (or another refusal).
    Refused,
    /// No answer (connection failed).
    Failed,
}

/// What one actor saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The actor's kind.
    pub kind: Kind,
    /// Its user agent.
    pub agent: String,
    /// The principal whose token it used first, if any.
    pub principal: Option<usize>,
    /// Answers, in step order.
    pub answers: Vec<Answer>,
    /// Which steps were attacks.
    pub attack: Vec<bool>,
}

// === impl Outcome ===

impl Outcome {
    /// Requests from the attack's start to the first step-up or deny (counting that one).
    pub fn to_detection(&self) -> Option<usize> {
        let start = self.attack.iter().position(|a| *a)?;
        self.answers[start..]
            .iter()
            .position(|a| matches!(a, Answer::StepUp | Answer::Denied))
            .map(|i| i + 1)
    }

    /// Whether any request outside an attack was stepped up or denied.
    pub fn challenged_while_benign(&self) -> bool {
        self.answers
            .iter()
            .zip(&self.attack)
            .any(|(a, attack)| !attack && matches!(a, Answer::StepUp | Answer::Denied))
    }

    /// Whether any request outside an attack was denied.
    pub fn denied_while_benign(&self) -> bool {
        self.answers
            .iter()
            .zip(&self.attack)
            .any(|(a, attack)| !attack && *a == Answer::Denied)
    }
}

fn classify(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let challenge = headers
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match status {
        401 if challenge.contains("insufficient_user_authentication") => Answer::StepUp,
        403 if body.windows(11).any(|w| w == b"risk-denied") => Answer::Denied,
        401 | 403 => Answer::Refused,
        _ => Answer::Allowed,
    }
}

/// Sends every actor's requests to `gateway` (host `host`), `scale` times faster than planned;
/// `tokens[n]` is principal `n`'s token.
pub async fn drive(plan: &Plan, gateway: SocketAddr, host: &str, tokens: Arc<Vec<String>>, scale: f64) -> Vec<Outcome> {
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for actor in &plan.actors {
        let actor = actor.clone();
        let tokens = tokens.clone();
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut clients: Vec<(Ipv4Addr, Client)> = Vec::new();
            let mut answers = Vec::with_capacity(actor.steps.len());
            for step in &actor.steps {
                let due = start + Duration::from_secs_f64(step.at_ms as f64 / 1000.0 / scale);
                tokio::time::sleep_until(due).await;
                let client = match clients.iter().find(|(ip, _)| *ip == step.ip) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = client_from(step.ip);
                        clients.push((step.ip, c.clone()));
                        c
                    }
                };
                let token = match step.cred {
                    Cred::Principal(p) => tokens.get(p).cloned().unwrap_or_default(),
                    Cred::Garbage(n) => format!("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLXtufSJ9.{n:08x}"),
                };
                let req = http::Request::get(format!("http://{gateway}{}", step.target))
                    .header("host", host.as_str())
                    .header("user-agent", actor.agent.as_str())
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()));
                let answer = match req {
                    Err(_) => Answer::Failed,
                    Ok(req) => match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                        Ok(Ok(resp)) => {
                            let (parts, body) = resp.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            classify(parts.status.as_u16(), &parts.headers, &body)
                        }
                        _ => Answer::Failed,
                    },
                };
                answers.push(answer);
            }
            Outcome {
                kind: actor.kind,
                agent: actor.agent.clone(),
                principal: actor.steps.iter().find_map(|s| match s.cred {
                    Cred::Principal(p) => Some(p),
                    Cred::Garbage(_) => None,
                }),
                answers,
                attack: actor.steps.iter().map(|s| s.attack).collect(),
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(o) = t.await {
            out.push(o);
        }
    }
    out
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client_from(ip: Ipv4Addr) -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(ip)));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// One scenario's results.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioReport {
    /// Scenario.
    pub kind: Kind,
    /// Attackers.
    pub attackers: usize,
    /// Attackers stepped up or denied.
    pub detected: usize,
    /// Median requests from attack start to the first step-up or deny, over the detected.
    pub median_requests: Option<usize>,
}

/// The whole run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Benign principals.
    pub benign: usize,
    /// Benign principals ever stepped up or denied.
    pub benign_challenged: usize,
    /// Benign principals ever denied.
    pub benign_denied: usize,
    /// Requests sent, and those that got no answer.
    pub requests: usize,
    /// Requests without an answer.
    pub failed: usize,
}

/// Sums outcomes up.
pub fn report(outcomes: &[Outcome]) -> Report {
    let benign: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == Kind::Benign).collect();
    let scenarios = Kind::ATTACKS
        .into_iter()
        .map(|kind| {
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
            let mut firsts: Vec<usize> = mine.iter().filter_map(|o| o.to_detection()).collect();
            firsts.sort_unstable();
            ScenarioReport {
                kind,
                attackers: mine.len(),
                detected: firsts.len(),
                median_requests: (!firsts.is_empty()).then(|| firsts[(firsts.len() - 1) / 2]),
            }
        })
        .collect();
    Report {
        scenarios,
        benign: benign.len(),
        benign_challenged: benign.iter().filter(|o| o.challenged_while_benign()).count(),
        benign_denied: benign.iter().filter(|o| o.denied_while_benign()).count(),
        requests: outcomes.iter().map(|o| o.answers.len()).sum(),
        failed: outcomes
            .iter()
            .flat_map(|o| &o.answers)
            .filter(|a| **a == Answer::Failed)
            .count(),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "| scenario | attackers | detected | median requests to first step-up/deny |"
        )?;
        writeln!(f, "|---|---:|---:|---:|")?;
        for s in &self.scenarios {
            writeln!(
                f,
                "| {} | {} | {:.0}% | {} |",
                s.kind.name(),
                s.attackers,
                100.0 * s.detected as f64 / s.attackers.max(1) as f64,
                s.median_requests.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
            )?;
        }
        writeln!(
            f,
            "\nbenign principals: {}, challenged: {} ({:.2}%), denied: {}; requests: {}, unanswered: {}",
            self.benign,
            self.benign_challenged,
            100.0 * self.benign_challenged as f64 / self.benign.max(1) as f64,
            self.benign_denied,
            self.requests,
            self.failed
        )
    }
}

/// The gateway config the simulation runs against: one bearer route (host `app.test`) with a
/// trust policy (`trust`, YAML flow mappings' inside) over `upstream`, tokens from `issuer`, the
/// engine's entity clock `scale` times faster, and `engine` more engine settings (flow mapping
/// entries, may be empty).
pub fn gateway_config(
    listen: &str,
    admin: &str,
    upstream: SocketAddr,
    issuer: &str,
    scale: f64,
    trust: &str,
    engine: &str,
) -> String {
    let engine = if engine.is_empty() {
        String::new()
    } else {
        format!(", {engine}")
    };
    format!(
        r#"
listeners: [{{ name: http, address: "{listen}" }}]
admin: {{ address: "{admin}" }}
identity:
  providers:
    - {{ name: idp, issuer: "{issuer}", audiences: [api], algorithms: [ES256], require_at_jwt: true }}
upstreams: [{{ name: app, endpoints: ["http://{upstream}"] }}]
routes:
  - {{ name: app, upstream: app, match: {{ host: app.test }}, auth: {{ bearer: idp }}, trust: {{ {trust} }} }}
engine: {{ time_scale: {scale}{engine} }}
telemetry: {{ tap_capacity: 65536 }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_sorted() {
        let shape = Shape {
            benign: 10,
            per_scenario: 2,
            warmup_min: 40,
            attack_min: 20,
            seed: 7,
        };
        let a = plan(shape);
        let b = plan(shape);
        assert_eq!(a.actors.len(), 10 + 6 * 2 + 2 * 2);
        assert_eq!(a.principals, 10 + 6 * 2);
        for (x, y) in a.actors.iter().zip(&b.actors) {
            assert_eq!(x.steps, y.steps);
        }
        for actor in &a.actors {
            assert!(actor.steps.windows(2).all(|w| w[1].at_ms >= w[0].at_ms));
            let attacks = actor.steps.iter().filter(|s| s.attack).count();
            assert_eq!(attacks > 0, !matches!(actor.kind, Kind::Benign | Kind::Victim));
        }
    }

    #[test]
    fn outcomes_count_from_the_attack_start() {
        let o = Outcome {
            kind: Kind::Scraping,
            agent: "curl/8.5.0".into(),
            principal: Some(0),
            answers: vec![Answer::Allowed, Answer::Allowed, Answer::Allowed, Answer::StepUp],
            attack: vec![false, true, true, true],
        };
        assert_eq!(o.to_detection(), Some(3));
        assert!(!o.challenged_while_benign());
        let r = report(&[o]);
        assert_eq!(r.scenarios[2].median_requests, Some(3));
    }
}
