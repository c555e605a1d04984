//! The adaptive-trust evaluation: drives the real gateway binary over loopback with a benign
//! population and every attack scenario (`gateway_tests::traffic`), and prints per scenario the
//! share of attackers stepped up or denied, the median requests from attack start to the first
//! step-up or deny, and the share of benign principals ever challenged. Deterministic plan for a
//! seed; tokens from the real OpenID provider of the test suite (`tests/oidc`).
//!
//! `bench/simulate.sh [--benign N] [--per-scenario N] [--population off] ...`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gateway_tests::traffic::{self, Shape};
use gateway_tests::{OidcProvider, Upstream};

#[derive(Parser, Debug)]
struct Args {
    /// Gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// Benign principals.
    #[arg(long, default_value_t = 300)]
    benign: usize,
    /// Attackers per scenario.
    #[arg(long, default_value_t = 20)]
    per_scenario: usize,
    /// Simulated minutes of benign traffic before attacks.
    #[arg(long, default_value_t = 120)]
    warmup_min: u64,
    /// Simulated minutes attacks start within and run.
    #[arg(long, default_value_t = 60)]
    attack_min: u64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 120.0)]
    scale: f64,
    /// Plan seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use the population model (`on` or `off`).
    #[arg(long, default_value = "on")]
    population: String,
    /// Write the gateway's log (warnings: every step-up and deny with its reasons) here.
    #[arg(long)]
    gateway_log: Option<PathBuf>,
}

struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = Shape {
        benign: args.benign,
        per_scenario: args.per_scenario,
        warmup_min: args.warmup_min,
        attack_min: args.attack_min,
        seed: args.seed,
    };
    let plan = traffic::plan(shape);
    let requests: usize = plan.actors.iter().map(|a| a.steps.len()).sum();
    eprintln!(
        "plan: {} actors, {} principals, {requests} requests over {:.0} simulated minutes ({:.0} s real)",
        plan.actors.len(),
        plan.principals,
        plan.length_ms as f64 / 60_000.0,
        plan.length_ms as f64 / 1000.0 / args.scale
    );
    let idp = OidcProvider::start(
        gateway_tests::free_port(),
        &[("USERS", &plan.principals.to_string()), ("TTL", "7200")],
    )
    .await?;
    let mut tokens = Vec::with_capacity(plan.principals);
    for i in 0..plan.principals {
        tokens.push(idp.token_for(&format!("user-{i}"), "user-secret").await?);
    }
    let upstream = Upstream::start("app", "127.0.0.1:0".parse()?).await?;
    let (port, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
    let population = if args.population == "off" { "false" } else { "true" };
    let yaml = traffic::gateway_config(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{admin}"),
        upstream.addr(),
        &idp.issuer(),
        args.scale,
        "step_up_at: 0.5, deny_at: 0.85",
        &format!("population: {population}"),
    );
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml)?;
    let _gw = Gateway(
        Command::new(&args.gateway)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match &args.gateway_log {
                Some(f) => Stdio::from(std::fs::File::create(f)?),
                None => Stdio::null(),
            })
            .spawn()
            .with_context(|| format!("starting {}", args.gateway.display()))?,
    );
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(m) = gateway_tests::get(&metrics).await {
            let text = String::from_utf8_lossy(m.body()).to_string();
            if gateway_tests::metric(&text, "gateway_identity_provider_ready", &[("provider", "idp")]) == Some(1.0) {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("the gateway never became ready");
    }
    let started = tokio::time::Instant::now();
    let outcomes = traffic::drive(
        &plan,
        format!("127.0.0.1:{port}").parse()?,
        "app.test",
        Arc::new(tokens),
        args.scale,
    )
    .await;
    let report = traffic::report(&outcomes);
    let text = String::from_utf8_lossy(gateway_tests::get(&metrics).await?.body()).to_string();
    let samples = gateway_tests::metric(&text, "gateway_engine_model_samples", &[]).unwrap_or(0.0);
    let dropped = gateway_tests::metric(&text, "gateway_tap_events_total", &[("result", "dropped")]).unwrap_or(0.0);
    println!(
        "seed {}, population model {} ({samples} samples at the end), scale {}x, {:.0} s real, tap drops {dropped}\n",
        args.seed,
        args.population,
        args.scale,
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    for o in outcomes
        .iter()
        .filter(|o| o.kind == traffic::Kind::Benign && o.challenged_while_benign())
    {
        let first = o
            .answers
            .iter()
            .position(|a| matches!(a, traffic::Answer::StepUp | traffic::Answer::Denied));
        println!(
            "benign challenged: user-{} ({}), first at request {} of {}",
            o.principal.unwrap_or(usize::MAX),
            o.agent,
            first.map(|i| i + 1).unwrap_or(0),
            o.answers.len()
        );
    }
    Ok(())
}
