//! The `gateway` command line: parse arguments → load and validate config → init logging → run
//! → exit code. `main.rs` only calls [`main`].
//!
//! Exit codes: 0 clean stop (after draining), 1 runtime failure (e.g. a port cannot be bound),
//! 2 bad command line, 64 invalid config (nothing was bound).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{config, demo, Gateway, StartError};
use clap::{Parser, Subcommand, ValueEnum};
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Identity-aware reverse proxy with adaptive trust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format (default: the config's `telemetry.logs.format`, else text).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway from a config file.
    Run {
        /// The YAML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 valid, 64 invalid).
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file.
    ConfigSchema,
    /// Write Prometheus recording and burn-rate alerting rules for the config's `slos`
    /// (exit 64 when the config is invalid).
    SloRules {
        /// The YAML config file.
        file: PathBuf,
        /// Where to write the rules (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Prefix of the alerts' runbook URLs.
        #[arg(long, default_value = "docs/runbooks/")]
        runbooks: String,
    },
    /// Run a self-contained demo: built-in upstream, self-signed certificate, sample config.
    Demo {
        /// HTTPS port.
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        /// Plain HTTP port.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Admin port.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
}

fn init_logging(cli: Option<LogFormat>, telemetry: &config::TelemetryConfig) {
    use crate::telemetry::logs::{self, Format};
    let format = match cli {
        Some(LogFormat::Json) => Format::Json,
        Some(LogFormat::Text) => Format::Text,
        None => telemetry.log_format.unwrap_or(Format::Text),
    };
    logs::init(format, &telemetry.log_level);
}

/// Runs the command line with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match config::check(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::SloRules { file, output, runbooks } => {
            let cfg = match config::check(&file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let name = file.display().to_string();
            let text = crate::slo::rules(&cfg.slos, &name, &runbooks);
            match output {
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Some(out) => match std::fs::write(&out, text) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("cannot write {}: {e}", out.display());
                        ExitCode::from(EXIT_RUNTIME)
                    }
                },
            }
        }
        Command::ConfigSchema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Run { config: path } => {
            // Validate before anything is bound or spawned.
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(cli.log_format, &cfg.telemetry);
            let code = runtime(cli.worker_threads).block_on(run(cfg, path));
            crate::telemetry::logs::finish();
            code
        }
        Command::Demo {
            https_port,
            http_port,
            admin_port,
        } => {
            init_logging(cli.log_format, &config::TelemetryConfig::default());
            let code = runtime(cli.worker_threads).block_on(run_demo(demo::DemoPorts {
                https: https_port,
                http: http_port,
                admin: admin_port,
            }));
            crate::telemetry::logs::finish();
            code
        }
    }
}

fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name("gateway-worker");
    // A task woken by the running one goes to the back of the queue, not next: the answers that
    // come back from upstreams in one wake-up are all written before a QUIC connection's driver
    // runs, so they leave in one send rather than one send each (bench/RESULTS.md: HTTP/3
    // requests/s from 0.65x to 0.74x HTTP/2's at 4 connections x 16 streams; HTTP/1.1 a little
    // better too).
    b.disable_lifo_slot();
    if let Some(n) = workers {
        b.worker_threads(n.max(1));
    }
    match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(EXIT_RUNTIME as i32);
        }
    }
}

async fn run(cfg: config::Config, path: PathBuf) -> ExitCode {
    let gw = match Gateway::start(cfg, Some(path), Registry::default()).await {
        Ok(g) => g,
        Err(e @ StartError::Config(_)) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    serve_until_signal(gw).await
}

async fn run_demo(ports: demo::DemoPorts) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("gateway-demo-{}", std::process::id()));
    let prepared = (|| -> std::io::Result<((PathBuf, PathBuf), PathBuf)> {
        std::fs::create_dir_all(&dir)?;
        Ok((demo::write_self_signed(&dir)?, demo::write_device_identity(&dir)?))
    })();
    let ((cert, key), devices_ca) = match prepared {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "cannot write demo files");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let upstream = match demo::Upstream::start("demo-upstream", SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the demo upstream");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let issuer = match demo::Issuer::start().await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the demo token issuer");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let path = dir.join("gateway.yaml");
    if let Err(e) = std::fs::write(
        &path,
        demo::config_text(ports, upstream.addr(), (&cert, &key), &devices_ca, &issuer.issuer()),
    ) {
        tracing::error!(error = %e, "cannot write the demo config");
        return ExitCode::from(EXIT_RUNTIME);
    }
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let gw = match Gateway::start(cfg, Some(path), Registry::default()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the demo (use --https-port, --http-port, --admin-port to pick free ports)");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let token = issuer.token("alice", "read", "urn:demo:pwd", std::time::Duration::from_secs(3600));
    let mallory = issuer.token("mallory", "read", "urn:demo:pwd", std::time::Duration::from_secs(3600));
    println!("{}", demo::banner(ports, &dir, &token, &mallory));
    let code = serve_until_signal(gw).await;
    upstream.stop();
    issuer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    code
}

async fn serve_until_signal(gw: Gateway) -> ExitCode {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                let _ = gw.reload().await;
            }
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "draining"); break; }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "draining"); break; }
        }
    }
    // A second signal while draining stops at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: stopping without waiting for in-flight requests");
        std::process::exit(0);
    });
    let grace = gw.drain_timeout();
    if gw.shutdown(grace).await {
        tracing::info!("drained; stopped");
    } else {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "drain deadline reached; remaining connections were closed"
        );
    }
    ExitCode::SUCCESS
}
