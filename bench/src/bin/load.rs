//! Load driver: how does the gateway compare with a direct connection and with nginx as a peer
//! proxy, in throughput, latency, CPU per request and memory, on this machine?
//!
//! Everything runs on 127.0.0.1. An nginx instance is the upstream (a small fixed answer), so the
//! upstream is never what is measured. Each proxy gets one worker; the proxy under test and the
//! upstream are pinned to core 0 and wrk to core 1 (`taskset`), with the same connections and
//! duration for every target, runs interleaved and repeated; the table shows medians. CPU per
//! request is the proxy's user + system time from `/proc/PID/stat` over the run divided by the
//! requests wrk completed. Memory: resident set of the gateway holding 10,000 idle keep-alive
//! connections, and its peak resident set while 1 GiB streams through it each way.
//!
//! Not run in CI. See `bench/README.md` for how to run it; results go in `bench/RESULTS.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use gateway_bench::{
    cpu_seconds, free_port, gateway_command, median, nginx_command, wait_port, Proc, NGINX_BARE, NGINX_FIELDS,
};
use http_body_util::BodyExt;

#[derive(Parser, Debug)]
#[command(about = "Gateway load harness against direct access and nginx")]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds (each round runs every target once, in rotated order).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// Work directory for configs and logs.
    #[arg(long, default_value = "bench/out")]
    work: PathBuf,
    /// Idle keep-alive connections for the memory run.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Bytes streamed each way for the memory run.
    #[arg(long, default_value_t = 1 << 30)]
    stream_bytes: u64,
    /// Skip the throughput runs.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the memory runs.
    #[arg(long)]
    skip_memory: bool,
    /// Add a target: the same gateway with full telemetry (access log at info in JSON to a
    /// file, traces sampled at 1% and exported over OTLP/HTTP to the upstream nginx).
    #[arg(long)]
    telemetry: bool,
    /// Run only the plain HTTP/1.1 targets (quick A/B checks); the other rows stay empty.
    #[arg(long)]
    plain_only: bool,
    /// A second gateway binary to run as an extra target in the same rounds (A/B comparison).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// YAML appended to the --compare gateway's config (e.g. `engine: { enabled: false }`, to
    /// compare the same binary with a feature off).
    #[arg(long)]
    compare_extra: Option<String>,
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(field)?
            .trim_start_matches(':')
            .trim()
            .strip_suffix(" kB")?
            .trim()
            .parse()
            .ok()
    })
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

fn run_wrk(url: &str, header: Option<&str>, args: &Args, cpu_pid: Option<u32>) -> anyhow::Result<Sample> {
    let before = cpu_pid.map(cpu_seconds);
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "1",
        "wrk",
        "-t1",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.duration),
        "--latency",
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let after = cpu_pid.map(cpu_seconds);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut s = Sample {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        cpu_us_per_req: f64::NAN,
        errors: 0,
    };
    let mut requests = 0u64;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            s.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            s.p50_ms = parse_ms(v).unwrap_or(f64::NAN);
        } else if let Some(v) = t.strip_prefix("99%") {
            s.p99_ms = parse_ms(v).unwrap_or(f64::NAN);
        } else if t.contains(" requests in ") {
            requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            s.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            s.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if let (Some(b), Some(a)) = (before, after) {
        if requests > 0 {
            s.cpu_us_per_req = (a - b) * 1e6 / requests as f64;
        }
    }
    Ok(s)
}

/// An ES256 key, the JWKS holding its public half, and a long-lived token it signed, for the
/// bearer-token target (the upstream nginx serves discovery and the JWKS).
struct BenchIdentity {
    jwks: String,
    token: String,
}

fn bench_identity(issuer: &str) -> anyhow::Result<BenchIdentity> {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use gateway::identity::jwt::{es256_jwk, sign_es256};
    let key =
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| anyhow::anyhow!("key generation"))?;
    let jwks = serde_json::json!({ "keys": [es256_jwk(&key, "bench")] });
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 24 * 3600;
    let header = serde_json::json!({ "alg": "ES256", "kid": "bench", "typ": "at+jwt" });
    let claims = serde_json::json!({ "iss": issuer, "aud": "api", "sub": "bench-client", "exp": exp, "scope": "read" });
    let token = sign_es256(&key, &header, &claims).ok_or_else(|| anyhow::anyhow!("signing"))?;
    Ok(BenchIdentity {
        jwks: jwks.to_string(),
        token,
    })
}

fn nginx_upstream_conf(dir: &Path, port: u16, jwks: &str) -> String {
    let issuer = format!("http://127.0.0.1:{port}");
    let discovery = serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }).to_string();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/upstream.pid;\nerror_log {d}/upstream.err warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d}/up_body;\n  proxy_temp_path {d}/up_proxy;\n  fastcgi_temp_path {d}/up_fcgi;\n  uwsgi_temp_path {d}/up_uwsgi;\n  scgi_temp_path {d}/up_scgi;\n\
           server {{ listen 127.0.0.1:{port} backlog=4096;\n\
             location / {{ default_type text/plain; return 200 \"hello from the upstream\\n\"; }}\n\
             location = /.well-known/openid-configuration {{ default_type application/json; return 200 '{discovery}'; }}\n\
             location = /jwks {{ default_type application/json; return 200 '{jwks}'; }}\n\
             location = /v1/traces {{ default_type application/x-protobuf; return 200 ''; }} }}\n}}\n",
        d = dir.display()
    )
}

/// nginx as the peer proxy ([`NGINX_BARE`] and [`NGINX_FIELDS`]) on `plain` and `tls`, and as a bare proxy
/// ([`NGINX_BARE`]) on `bare`, for reference.
fn nginx_proxy_conf(dir: &Path, up: u16, plain: u16, tls: u16, bare: u16, cert: &Path, key: &Path) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/proxy.pid;\nerror_log {d}/proxy.err warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d}/px_body;\n  proxy_temp_path {d}/px_proxy;\n  fastcgi_temp_path {d}/px_fcgi;\n  uwsgi_temp_path {d}/px_uwsgi;\n  scgi_temp_path {d}/px_scgi;\n\
           upstream backend {{ server 127.0.0.1:{up}; keepalive 256; keepalive_requests 10000000; }}\n\
           server {{\n    listen 127.0.0.1:{plain} backlog=4096;\n    listen 127.0.0.1:{tls} ssl backlog=4096;\n\
             ssl_protocols TLSv1.3;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n\
             location / {{ {NGINX_BARE} {NGINX_FIELDS} }}\n  }}\n\
           server {{\n    listen 127.0.0.1:{bare} backlog=4096;\n    location / {{ {NGINX_BARE} }}\n  }}\n}}\n",
        d = dir.display(),
        c = cert.display(),
        k = key.display()
    )
}

fn gateway_conf(
    up: SocketAddr,
    plain: u16,
    tls: u16,
    admin: u16,
    cert: &Path,
    key: &Path,
    stream_up: Option<SocketAddr>,
) -> String {
    let stream = if stream_up.is_some() {
        "  - { name: stream, upstream: stream, match: { host: stream }, max_body_bytes: 4294967296 }\n"
    } else {
        ""
    };
    let stream_pool = stream_up
        .map(|s| format!("  - {{ name: stream, endpoints: [\"http://{s}\"], request_timeout: 300s }}\n"))
        .unwrap_or_default();
    format!(
        "listeners:\n  - {{ name: http, address: \"127.0.0.1:{plain}\" }}\n  - name: https\n    address: \"127.0.0.1:{tls}\"\n    tls:\n      certificates: [{{ cert: \"{c}\", key: \"{k}\" }}]\n\
         admin: {{ address: \"127.0.0.1:{admin}\" }}\nlimits: {{ max_connections: 25000, idle_timeout: 300s }}\n\
         identity: {{ providers: [{{ name: bench, issuer: \"http://{up}\", audiences: [api], algorithms: [ES256] }}] }}\n\
         routes:\n{stream}  - {{ name: bench, upstream: bench }}\n  - {{ name: bench-auth, upstream: bench, match: {{ path_prefix: /auth }}, auth: {{ bearer: bench }} }}\nupstreams:\n  - {{ name: bench, endpoints: [\"http://{up}\"], max_idle_per_endpoint: 1024 }}\n{stream_pool}\
         reload: {{ watch: false }}\n",
        c = cert.display(),
        k = key.display()
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.gateway.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p gateway`",
            args.gateway.display()
        );
    }
    std::fs::create_dir_all(&args.work)?;
    let dir = std::fs::canonicalize(&args.work)?;
    let (cert, key) = gateway::demo::write_self_signed(&dir)?;
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")?
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .unwrap_or(": unknown")
            .trim_start_matches([' ', '\t', ':'])
    );
    println!("machine: {machine}");
    println!(
        "command: bench/run.sh --duration {} --rounds {} --connections {}\n",
        args.duration, args.rounds, args.connections
    );

    if !args.skip_throughput {
        throughput(&args, &dir, &cert, &key)?;
    }
    if !args.skip_memory {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(memory(&args, &dir, &cert, &key))?;
    }
    Ok(())
}

fn throughput(args: &Args, dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let (up, px, pxs, pxb, gw, gws, admin) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let ident = bench_identity(&format!("http://127.0.0.1:{up}"))?;
    let auth_header = format!("Authorization: Bearer {}", ident.token);
    std::fs::write(dir.join("upstream.conf"), nginx_upstream_conf(dir, up, &ident.jwks))?;
    std::fs::write(
        dir.join("proxy.conf"),
        nginx_proxy_conf(dir, up, px, pxs, pxb, cert, key),
    )?;
    std::fs::write(
        dir.join("gateway.yaml"),
        gateway_conf(SocketAddr::from(([127, 0, 0, 1], up)), gw, gws, admin, cert, key, None),
    )?;
    let nginx = |conf: &str| nginx_command(dir, &dir.join(conf));
    let gateway_cmd = |bin: &Path, conf: &str, log: Option<&str>, quiet: bool| {
        gateway_command(bin, &dir.join(conf), true, log.map(|l| dir.join(l)).as_deref(), quiet)
    };
    let _upstream = Proc::spawn("nginx upstream", &mut nginx("upstream.conf"))?;
    let proxy = Proc::spawn("nginx proxy", &mut nginx("proxy.conf"))?;
    let gateway = Proc::spawn(
        "gateway",
        &mut gateway_cmd(&args.gateway, "gateway.yaml", Some("gateway.log"), true)?,
    )?;
    let mut ports = vec![up, px, pxs, pxb, gw, gws];
    // Optional second binary, same config on its own ports.
    let (bw, bws, badmin) = (free_port()?, free_port()?, free_port()?);
    let alt = match &args.compare {
        Some(bin) => {
            let conf = gateway_conf(SocketAddr::from(([127, 0, 0, 1], up)), bw, bws, badmin, cert, key, None)
                + args.compare_extra.as_deref().unwrap_or("")
                + "\n";
            std::fs::write(dir.join("gateway-b.yaml"), conf)?;
            ports.push(bw);
            Some(Proc::spawn(
                "gateway b",
                &mut gateway_cmd(bin, "gateway-b.yaml", None, true)?,
            )?)
        }
        None => None,
    };
    // Optional: the same binary with full telemetry, on its own ports.
    let (fw, fws, fadmin) = (free_port()?, free_port()?, free_port()?);
    let full = if args.telemetry {
        let conf = gateway_conf(SocketAddr::from(([127, 0, 0, 1], up)), fw, fws, fadmin, cert, key, None)
            + &format!(
                "telemetry: {{ logs: {{ level: info, format: json }}, traces: {{ endpoint: \"http://127.0.0.1:{up}\", protocol: http, sampling_ratio: 0.01 }} }}\n"
            );
        std::fs::write(dir.join("gateway-full.yaml"), conf)?;
        ports.push(fw);
        Some(Proc::spawn(
            "gateway full telemetry",
            &mut gateway_cmd(&args.gateway, "gateway-full.yaml", Some("gateway-full.log"), false)?,
        )?)
    } else {
        None
    };
    for p in ports {
        wait_port(p)?;
    }
    // taskset execs, so these pids are the proxies themselves.
    let mut targets: Vec<(&str, String, Option<u32>)> = vec![
        ("direct", format!("http://127.0.0.1:{up}/"), None),
        ("gateway", format!("http://127.0.0.1:{gw}/"), Some(gateway.pid())),
        ("nginx", format!("http://127.0.0.1:{px}/"), Some(proxy.pid())),
        ("gateway tls", format!("https://127.0.0.1:{gws}/"), Some(gateway.pid())),
        ("nginx tls", format!("https://127.0.0.1:{pxs}/"), Some(proxy.pid())),
        (
            "gateway bearer",
            format!("http://127.0.0.1:{gw}/auth"),
            Some(gateway.pid()),
        ),
        ("nginx bare", format!("http://127.0.0.1:{pxb}/"), Some(proxy.pid())),
    ];
    if let Some(b) = &alt {
        targets.push((
            "gateway b (--compare)",
            format!("http://127.0.0.1:{bw}/"),
            Some(b.pid()),
        ));
        targets.push((
            "gateway b tls (--compare)",
            format!("https://127.0.0.1:{bws}/"),
            Some(b.pid()),
        ));
    }
    if let Some(f) = &full {
        targets.push((
            "gateway full telemetry",
            format!("http://127.0.0.1:{fw}/"),
            Some(f.pid()),
        ));
    }
    // Warm up connection pools and caches.
    let warm = Args {
        duration: 2,
        ..clone_args(args)
    };
    let header_for = |name: &str| (name == "gateway bearer").then_some(auth_header.as_str());
    let skipped = |name: &str| args.plain_only && (name.contains("tls") || name.contains("bearer"));
    for (name, url, pid) in &targets {
        if !skipped(name) {
            run_wrk(url, header_for(name), &warm, *pid)?;
        }
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (name, url, pid) = &targets[i];
            if skipped(name) {
                continue;
            }
            let s = run_wrk(url, header_for(name), args, *pid)?;
            eprintln!(
                "round {round} {name}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms cpu {:.1} us/req errors {}",
                s.rps, s.p50_ms, s.p99_ms, s.cpu_us_per_req, s.errors
            );
            samples[i].push(s);
        }
    }
    let med = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let row = |i: usize| {
        (
            med(i, |s| s.rps),
            med(i, |s| s.p50_ms),
            med(i, |s| s.p99_ms),
            med(i, |s| s.cpu_us_per_req),
            samples[i].iter().map(|s| s.errors).sum::<u64>(),
        )
    };
    println!(
        "Throughput, {} connections, {} s per run, {} rounds, medians:\n",
        args.connections, args.duration, args.rounds
    );
    println!("| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors | req/s vs direct | req/s vs nginx | p99 vs nginx |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let direct = row(0);
    for (i, (name, _, _)) in targets.iter().enumerate() {
        if samples[i].is_empty() {
            continue; // not run (`--plain-only`)
        }
        let r = row(i);
        let peer = if name.contains("tls") { row(4) } else { row(2) };
        let vs_direct = if name.contains("tls") {
            "n/a".to_string()
        } else {
            format!("{:.2}", r.0 / direct.0)
        };
        let (vs_nginx, p99_vs) = if i == 0 {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            (format!("{:.2}", r.0 / peer.0), format!("{:.2}", r.2 / peer.2))
        };
        let cpu = if r.3.is_finite() {
            format!("{:.1}", r.3)
        } else {
            "n/a".into()
        };
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {cpu} | {} | {vs_direct} | {vs_nginx} | {p99_vs} |",
            r.0, r.1, r.2, r.4
        );
    }
    // One target's row against another's: `what` is printed before the ratios.
    let versus = |what: &str, a: usize, b: usize| {
        let (a, b) = (row(a), row(b));
        println!(
            "{what}: req/s {:.2}x, p99 {:.2}x, CPU {:.1} vs {:.1} us/req",
            a.0 / b.0,
            a.2 / b.2,
            a.3,
            b.3
        );
    };
    versus(
        "\nGateway vs nginx bare (proxying only, no forwarding fields or request id)",
        1,
        6,
    );
    // Full telemetry against the same binary at its defaults and against the --compare build.
    if let Some(f) = targets.iter().position(|(n, _, _)| *n == "gateway full telemetry") {
        versus(
            "\nFull telemetry vs the same build at its defaults (warn logs, no trace export)",
            f,
            1,
        );
        if let Some(b) = targets.iter().position(|(n, _, _)| *n == "gateway b (--compare)") {
            versus("Full telemetry vs the --compare build", f, b);
        }
    }
    // The full-telemetry access log grows by about 30 MB per second of load; it has served.
    let _ = std::fs::remove_file(dir.join("gateway-full.log"));
    // Bearer validation (cached token) against the same proxying without authentication.
    if let Some(b) = targets
        .iter()
        .position(|(n, _, _)| *n == "gateway bearer")
        .filter(|&b| !samples[b].is_empty())
    {
        versus("\nBearer validation on (cached token) vs off, same run", b, 1);
    }
    println!();
    Ok(())
}

fn clone_args(a: &Args) -> Args {
    Args {
        duration: a.duration,
        rounds: a.rounds,
        connections: a.connections,
        gateway: a.gateway.clone(),
        work: a.work.clone(),
        idle_connections: a.idle_connections,
        stream_bytes: a.stream_bytes,
        skip_throughput: a.skip_throughput,
        skip_memory: a.skip_memory,
        compare: a.compare.clone(),
        compare_extra: a.compare_extra.clone(),
        plain_only: a.plain_only,
        telemetry: a.telemetry,
    }
}

async fn memory(args: &Args, dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let upstream = gateway::demo::Upstream::start("stream", "127.0.0.1:0".parse()?).await?;
    let (gw, gws, admin) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(
        dir.join("gateway-mem.yaml"),
        gateway_conf(upstream.addr(), gw, gws, admin, cert, key, Some(upstream.addr())),
    )?;
    let start = || -> anyhow::Result<Proc> {
        let p = Proc::spawn(
            "gateway",
            &mut gateway_command(
                &args.gateway,
                &dir.join("gateway-mem.yaml"),
                false,
                Some(&dir.join("gateway-mem.log")),
                true,
            )?,
        )?;
        wait_port(gw)?;
        Ok(p)
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], gw));

    // Streaming: upload then download `stream_bytes` through a fresh gateway; peak RSS.
    let p = start()?;
    let base = status_kib(p.pid(), "VmRSS").unwrap_or(0);
    let chunk = Bytes::from(vec![b'u'; 1 << 20]);
    let chunks = args.stream_bytes >> 20;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (tx, body) = gateway_tests::ChannelBody::new(4);
    let req = http::Request::post("/drain").header("host", "stream").body(body)?;
    let feeder = tokio::spawn(async move {
        for _ in 0..chunks {
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    let resp = sender.send_request(req).await?;
    let received = resp.into_body().collect().await?.to_bytes();
    feeder.await?;
    let up_ok = String::from_utf8_lossy(&received).contains(&format!("\"received\":{}", chunks << 20));
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(format!("/bytes/{}", chunks << 20))
        .header("host", "stream")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut body = sender.send_request(req).await?.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f?.data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    let peak = status_kib(p.pid(), "VmHWM").unwrap_or(0);
    drop(p);
    println!("Memory:\n");
    println!("| run | result | gateway RSS before | gateway peak RSS |");
    println!("|---|---|---:|---:|");
    println!(
        "| {} MiB up + {} MiB down, one connection each | upload {}, download {} | {:.1} MiB | {:.1} MiB |",
        chunks,
        chunks,
        if up_ok { "complete" } else { "INCOMPLETE" },
        if got == chunks << 20 { "complete" } else { "INCOMPLETE" },
        base as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // Idle keep-alive connections: each makes one request and stays open.
    let p = start()?;
    let base = status_kib(p.pid(), "VmRSS").unwrap_or(0);
    let mut held = Vec::with_capacity(args.idle_connections);
    let mut failed = 0usize;
    for _ in 0..args.idle_connections {
        let r = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            let task = tokio::spawn(conn);
            let req = http::Request::get("/")
                .header("host", "idle")
                .body(http_body_util::Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            resp.into_body().collect().await?;
            anyhow::Ok((sender, task))
        }
        .await;
        match r {
            Ok(h) => held.push(h),
            Err(_) => failed += 1,
        }
    }
    // Idle connections park 250 ms after their last request (see gateway/src/conn/io.rs).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = status_kib(p.pid(), "VmRSS").unwrap_or(0);
    let parked = parked_connections(admin).await.unwrap_or(0.0);
    println!(
        "| {} idle keep-alive connections ({} failed, {} parked) | held | {:.1} MiB | {:.1} MiB now ({:.2} KiB per connection) |",
        held.len(),
        failed,
        parked,
        base as f64 / 1024.0,
        rss as f64 / 1024.0,
        (rss.saturating_sub(base)) as f64 / held.len().max(1) as f64
    );
    drop(held);
    drop(p);
    Ok(())
}

/// The gateway's `gateway_connections_parked`, summed over listeners.
async fn parked_connections(admin: u16) -> anyhow::Result<f64> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", "admin")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let body = sender.send_request(req).await?.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("gateway_connections_parked"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}
