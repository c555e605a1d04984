//! HTTP/3 against HTTP/2: requests per second through the gateway over QUIC and over TLS with
//! the same client concurrency (connections × streams each), on this machine.
//!
//! An nginx instance is the upstream (a small fixed answer). The gateway (one worker) and nginx
//! are pinned to core 0; this driver pins itself to core 1 and runs both clients in one tokio
//! worker: hyper's HTTP/2 client over rustls, and quinn with h3. The two protocols run in turn,
//! repeated; the table shows medians of requests/s and of the gateway's CPU time per request
//! (user + system from `/proc/PID/stat`). Not run in CI; see `bench/README.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use gateway_bench::{cpu_seconds, free_port, gateway_command, median, nginx_command, wait_port, Proc};
use gateway_tests::h3::H3Client;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "HTTP/3 against HTTP/2 over TLS through the gateway")]
struct Args {
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds (each runs HTTP/2 then HTTP/3, alternating which goes first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent requests (streams) per connection.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// Work directory for configs and logs.
    #[arg(long, default_value = "bench/out")]
    work: PathBuf,
}

fn upstream_conf(dir: &Path, port: u16) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/h3-upstream.pid;\nerror_log {d}/h3-upstream.err warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d}/h3_body;\n  proxy_temp_path {d}/h3_proxy;\n  fastcgi_temp_path {d}/h3_fcgi;\n  uwsgi_temp_path {d}/h3_uwsgi;\n  scgi_temp_path {d}/h3_scgi;\n\
           server {{ listen 127.0.0.1:{port} backlog=4096;\n\
             location / {{ default_type text/plain; return 200 \"hello from the upstream\\n\"; }} }}\n}}\n",
        d = dir.display()
    )
}

fn gateway_conf(up: u16, tls: u16, admin: u16, cert: &Path, key: &Path) -> String {
    format!(
        "listeners:\n  - name: https\n    address: \"127.0.0.1:{tls}\"\n    tls:\n      certificates: [{{ cert: \"{c}\", key: \"{k}\" }}]\n    quic: {{ max_streams: 256 }}\n\
         admin: {{ address: \"127.0.0.1:{admin}\" }}\nlimits: {{ max_connections: 25000, idle_timeout: 300s }}\n\
         routes:\n  - {{ name: bench, upstream: bench }}\nupstreams:\n  - {{ name: bench, endpoints: [\"http://127.0.0.1:{up}\"], max_idle_per_endpoint: 1024 }}\n\
         reload: {{ watch: false }}\n",
        c = cert.display(),
        k = key.display()
    )
}

/// A client TLS config that accepts the gateway's self-signed certificate.
fn client_tls(alpn: &[u8]) -> rustls::ClientConfig {
    let mut cfg = (*gateway_tests::insecure_client()).clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

/// Requests answered 200 in `duration` by `streams` loops on each of `connections` HTTP/2
/// connections.
async fn run_h2(addr: SocketAddr, args: &Args) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let tls = Arc::new(client_tls(b"h2"));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let io = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(conn);
        for _ in 0..args.streams {
            let mut send = send.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let req = http::Request::get("https://localhost/")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let Ok(resp) = send.send_request(req).await else { break };
                    let ok = resp.status() == 200;
                    if resp.into_body().collect().await.is_ok() && ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// The same over HTTP/3.
async fn run_h3(addr: SocketAddr, args: &Args) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let tls = client_tls(b"h3");
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let client = Arc::new(H3Client::connect(addr, "localhost", &tls).await?);
        for _ in 0..args.streams {
            let client = client.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    match client.send(H3Client::get("localhost", "/"), Bytes::new()).await {
                        Ok((resp, _)) if resp.status() == 200 => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.gateway.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p gateway`",
            args.gateway.display()
        );
    }
    // This process and every thread it starts run on core 1; the gateway and nginx on core 0.
    let pinned = Command::new("taskset")
        .args(["-cp", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !pinned.success() {
        bail!("taskset could not pin the driver to core 1");
    }
    std::fs::create_dir_all(&args.work)?;
    let dir = std::fs::canonicalize(&args.work)?;
    let (cert, key) = gateway::demo::write_self_signed(&dir)?;
    let (up, tls, admin) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(dir.join("h3-upstream.conf"), upstream_conf(&dir, up))?;
    std::fs::write(dir.join("h3-gateway.yaml"), gateway_conf(up, tls, admin, &cert, &key))?;
    let _upstream = Proc::spawn(
        "nginx upstream",
        &mut nginx_command(&dir, &dir.join("h3-upstream.conf")),
    )?;
    let gateway = Proc::spawn(
        "gateway",
        &mut gateway_command(
            &args.gateway,
            &dir.join("h3-gateway.yaml"),
            true,
            Some(&dir.join("h3-gateway.log")),
            true,
        )?,
    )?;
    wait_port(up)?;
    wait_port(tls)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], tls));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "command: bench/h3.sh --duration {} --rounds {} --connections {} --streams {}\n",
        args.duration, args.rounds, args.connections, args.streams
    );
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let before = cpu_seconds(gateway.pid());
            let started = Instant::now();
            let n = rt
                .block_on(async {
                    if which == 0 {
                        run_h2(addr, &args).await
                    } else {
                        run_h3(addr, &args).await
                    }
                })
                .with_context(|| if which == 0 { "HTTP/2 run" } else { "HTTP/3 run" })?;
            let secs = started.elapsed().as_secs_f64();
            let used = cpu_seconds(gateway.pid()) - before;
            let rate = n as f64 / secs;
            let per = if n > 0 { used / n as f64 * 1e6 } else { f64::NAN };
            eprintln!(
                "round {round} {}: {rate:.0} req/s, {per:.1} µs CPU/req",
                ["HTTP/2 over TLS", "HTTP/3"][which]
            );
            rates[which].push(rate);
            cpu[which].push(per);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let (h2, h3) = (median(rates[0].clone()), median(rates[1].clone()));
    println!("| protocol | req/s | gateway CPU µs/req |");
    println!("|---|---:|---:|");
    println!("| HTTP/2 over TLS 1.3 | {h2:.0} | {:.1} |", median(cpu[0].clone()));
    println!("| HTTP/3 over QUIC | {h3:.0} | {:.1} |", median(cpu[1].clone()));
    println!("\nHTTP/3 / HTTP/2 requests/s: {:.2}x (target: at least 0.7x)", h3 / h2);
    Ok(())
}
