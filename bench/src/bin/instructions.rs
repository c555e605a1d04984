//! User-space instructions per proxied request, counted by valgrind's callgrind: a measure
//! that does not move with the machine's load, for A/B checks of changes too small to show
//! above the noise of a throughput run.
//!
//! For each gateway binary: an nginx upstream (small fixed answer), then the gateway (one
//! worker, plain HTTP/1.1 listener, default telemetry) run twice under callgrind, once serving
//! `--warmup` requests and once `--warmup` + `--requests`, over `--connections` keep-alive
//! connections; the difference of the two totals divided by `--requests` is what one request
//! costs, start-up and shutdown cancelled out. Counts cover every thread of the gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::Parser;
use gateway_bench::{free_port, nginx_command, wait_port, Proc, NGINX_BARE, NGINX_FIELDS};

#[derive(Parser)]
#[command(about = "Instructions per proxied request (callgrind), gateway A against B")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// A second binary, counted the same way.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Requests counted.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests served in both runs (start-up, first connections).
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Keep-alive connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Work directory for configs and logs.
    #[arg(long, default_value = "bench/out/instructions")]
    work: PathBuf,
    /// Keep callgrind's profile of the longer run of each binary here, as
    /// `callgrind.<n>.out` (n = 1 for `--gateway`, 2 for `--compare`), for `callgrind_annotate`.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Also count nginx proxying the same requests (one process, upstream keepalive, as in
    /// the load harness), as the peer and bare: two reference rows.
    #[arg(long)]
    nginx: bool,
}

/// What is counted.
enum Proxy<'a> {
    Gateway(&'a Path),
    /// nginx with this `location /` body.
    Nginx(&'static str, String),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if Command::new("valgrind").arg("--version").output().is_err() {
        bail!("valgrind is needed (Debian package `valgrind`)");
    }
    std::fs::create_dir_all(&args.work)?;
    let dir = std::fs::canonicalize(&args.work)?;
    let up = free_port()?;
    let conf = dir.join("upstream.conf");
    std::fs::write(&conf, upstream_conf(&dir, up))?;
    let _upstream = Proc::spawn("nginx upstream", &mut nginx_command(&dir, &conf))?;
    wait_port(up)?;

    let mut rows = Vec::new();
    if let Some(p) = &args.profiles {
        std::fs::create_dir_all(p)?;
    }
    let proxies = std::iter::once(&args.gateway)
        .chain(args.compare.as_ref())
        .map(|b| Proxy::Gateway(b))
        .chain(
            args.nginx
                .then(|| Proxy::Nginx("nginx", format!("{NGINX_BARE} {NGINX_FIELDS}"))),
        )
        .chain(args.nginx.then(|| Proxy::Nginx("nginx bare", NGINX_BARE.to_owned())));
    for (n, proxy) in proxies.enumerate() {
        let profile = args
            .profiles
            .as_ref()
            .map(|p| p.join(format!("callgrind.{}.out", n + 1)));
        let before = total(&proxy, &dir, up, &args, args.warmup, None)?;
        let after = total(&proxy, &dir, up, &args, args.warmup + args.requests, profile.as_deref())?;
        let per = after.saturating_sub(before) as f64 / args.requests as f64;
        let name = match proxy {
            Proxy::Gateway(bin) => bin.display().to_string(),
            Proxy::Nginx(name, _) => name.to_string(),
        };
        rows.push((name, per));
    }
    println!(
        "\nUser-space instructions per request, {} requests over {} connections (callgrind):\n",
        args.requests, args.connections
    );
    println!("| proxy | instructions/request | vs first |\n|---|---:|---:|");
    let first = rows[0].1;
    for (bin, per) in &rows {
        println!("| {bin} | {per:.0} | {:.3} |", per / first);
    }
    Ok(())
}

/// The instructions the proxy executed from start to exit, having served `requests`.
fn total(
    proxy: &Proxy<'_>,
    dir: &Path,
    up: u16,
    args: &Args,
    requests: usize,
    profile: Option<&Path>,
) -> anyhow::Result<u64> {
    let (plain, admin) = (free_port()?, free_port()?);
    let log = dir.join("callgrind.log");
    let out = profile.unwrap_or(Path::new("/dev/null"));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--log-file={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match proxy {
        Proxy::Gateway(bin) => {
            let conf = dir.join("gateway.yaml");
            std::fs::write(&conf, gateway_conf(plain, admin, up))?;
            cmd.arg(bin)
                .args(["--worker-threads", "1", "run", "--config"])
                .arg(&conf)
                .env("RUST_LOG", "warn");
        }
        Proxy::Nginx(_, location) => {
            let conf = dir.join("proxy.conf");
            std::fs::write(&conf, proxy_conf(dir, plain, up, location))?;
            cmd.args(["nginx", "-p"]).arg(dir).arg("-c").arg(&conf);
        }
    }
    let running = Proc::spawn("proxy under callgrind", &mut cmd)?;
    // Start-up under valgrind is slow: wait longer than for a native process.
    let mut waited = 0;
    while wait_port(plain).is_err() {
        waited += 1;
        if waited > 24 {
            bail!("the proxy under callgrind never listened on {plain}");
        }
    }
    drive(plain, requests, args.connections)?;
    // Stops it (SIGTERM), and callgrind writes its totals.
    drop(running);
    let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .find_map(|l| l.split_once("refs:").map(|(_, n)| n.trim().replace(',', "")))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no instruction total in {}", log.display()))
}

/// The gateway's config: one plain listener, one route to the upstream.
fn gateway_conf(plain: u16, admin: u16, up: u16) -> String {
    format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:{plain}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\" }}\n\
             routes: [{{ name: bench, upstream: bench }}]\n\
             upstreams: [{{ name: bench, endpoints: [\"http://127.0.0.1:{up}\"] }}]\nreload: {{ watch: false }}\n"
    )
}

/// nginx as the proxy: one process (no master), upstream keepalive, no access log, as in the
/// load harness, with `location` as its `location /`.
fn proxy_conf(dir: &Path, plain: u16, up: u16, location: &str) -> String {
    format!(
        "master_process off;\ndaemon off;\npid {d}/proxy.pid;\nerror_log {d}/proxy.err warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d}/px_body;\n  proxy_temp_path {d}/px_proxy;\n  fastcgi_temp_path {d}/px_fcgi;\n  uwsgi_temp_path {d}/px_uwsgi;\n  scgi_temp_path {d}/px_scgi;\n\
           upstream backend {{ server 127.0.0.1:{up}; keepalive 256; keepalive_requests 10000000; }}\n\
           server {{ listen 127.0.0.1:{plain};\n\
             location / {{ {location} }} }}\n}}\n",
        d = dir.display()
    )
}

/// `n` GET requests over `conns` keep-alive connections, in turns; each answer must be 200.
fn drive(port: u16, n: usize, conns: usize) -> anyhow::Result<()> {
    let mut streams = (0..conns.max(1))
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<Result<Vec<_>, _>>()?;
    let request = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions\r\n\r\n";
    let mut buf = Vec::new();
    let mut sent = 0;
    while sent < n {
        let turn = streams.len().min(n - sent);
        for s in &mut streams[..turn] {
            s.write_all(request)?;
        }
        for s in &mut streams[..turn] {
            read_answer(s, &mut buf)?;
        }
        sent += turn;
    }
    Ok(())
}

/// Reads one answer with a `Content-Length` body.
fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("answer: {}", head.lines().next().unwrap_or(""));
            }
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .context("answer without Content-Length")?;
            if buf.len() >= end + 4 + length {
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed mid-answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn upstream_conf(dir: &Path, port: u16) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/upstream.pid;\nerror_log {d}/upstream.err warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d}/up_body;\n  proxy_temp_path {d}/up_proxy;\n  fastcgi_temp_path {d}/up_fcgi;\n  uwsgi_temp_path {d}/up_uwsgi;\n  scgi_temp_path {d}/up_scgi;\n\
           server {{ listen 127.0.0.1:{port};\n\
             location / {{ default_type text/plain; return 200 \"hello from the upstream\\n\"; }} }}\n}}\n",
        d = dir.display()
    )
}
