//! Real Prometheus and Alertmanager (Debian's `prometheus` and `prometheus-alertmanager`,
//! installed by `scripts/test.sh`) as child processes on 127.0.0.1, and a webhook receiver that
//! records what Alertmanager delivers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::{free_port, get, json, send};

/// A server process on a port picked free beforehand, with its scratch directory; killed on
/// drop.
struct Server {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

/// Starts `bin` with `args(port, dir)` until it answers `GET /-/ready` with 200. Another
/// process can take the port between picking and binding, so a start whose process exits is
/// tried again on a new port (three times).
async fn start_server(bin: &str, config: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> anyhow::Result<Server> {
    let mut last = None;
    for _ in 0..3 {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("config.yml"), config)?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log"))?;
        let mut child = tokio::process::Command::new(bin)
            .args(args(port, dir.path()))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{bin} (scripts/test.sh installs it from Debian)"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + crate::patience() * 3;
        let ready = loop {
            if let Some(status) = child.try_wait()? {
                break Err(anyhow::anyhow!(
                    "{bin} exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
                ));
            }
            if let Ok(r) = get(&format!("http://{addr}/-/ready")).await {
                if r.status() == 200 {
                    break Ok(());
                }
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!("{bin} not ready on {addr}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match ready {
            Ok(()) => {
                return Ok(Server {
                    addr,
                    _dir: dir,
                    _child: child,
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{bin} did not start")))
}

/// A Prometheus server.
pub struct Prometheus {
    server: Server,
}

impl Prometheus {
    /// Starts Prometheus with `config` (a `prometheus.yml`); `--rules.alert.resend-delay=1s` so
    /// that a resolved alert reaches Alertmanager within a second.
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let server = start_server("prometheus", config, |port, dir| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--rules.alert.resend-delay=1s".into(),
                "--log.level=warn".into(),
            ]
        })
        .await?;
        Ok(Self { server })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `GET /api/v1/<path>?<params>`: the `data` of a successful answer, or the error Prometheus
    /// gave.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let r = get(&format!("http://{}/api/v1/{path}?{query}", self.addr())).await?;
        let body = json(&r);
        anyhow::ensure!(
            body["status"] == "success",
            "{} {}",
            body["errorType"].as_str().unwrap_or(""),
            body["error"].as_str().unwrap_or("")
        );
        Ok(body["data"].clone())
    }

    /// The instant vector (or scalar as a one-element vector) `expr` evaluates to now.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("scalar") | Some("string") => vec![data["result"].clone()],
            _ => data["result"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// An Alertmanager server (clustering off).
pub struct Alertmanager {
    server: Server,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (an `alertmanager.yml`).
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let server = start_server("prometheus-alertmanager", config, |port, dir| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ]
        })
        .await?;
        Ok(Self { server })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `POST /api/v2/alerts` with `alerts` (a JSON array).
    pub async fn post(&self, alerts: &serde_json::Value) -> anyhow::Result<()> {
        let req = Request::post("/api/v2/alerts")
            .header("host", self.addr().to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(alerts.to_string())))?;
        let r = send(self.addr(), req).await?;
        anyhow::ensure!(r.status() == 200, "alertmanager answered {}", r.status());
        Ok(())
    }

    /// `GET /api/v2/alerts`: every alert it holds, with its status.
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let r = get(&format!("http://{}/api/v2/alerts", self.addr())).await?;
        anyhow::ensure!(r.status() == 200, "alertmanager answered {}", r.status());
        Ok(json(&r).as_array().cloned().unwrap_or_default())
    }
}

/// One alert as a webhook delivered it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// When it arrived.
    pub at: Instant,
    /// The path it was posted to (the receiver).
    pub path: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels.
    pub labels: serde_json::Value,
}

/// An HTTP receiver for webhooks (Alertmanager's webhook payload, version 4): records every
/// alert of every notification, with the time it arrived.
pub struct Webhook {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Delivered>>>,
    raw: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Listens on 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (s, w) = (seen.clone(), raw.clone());
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let (seen, raw) = (s.clone(), w.clone());
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, raw) = (seen.clone(), raw.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let at = Instant::now();
                        for a in doc["alerts"].as_array().into_iter().flatten() {
                            seen.lock().expect("webhook log").push(Delivered {
                                at,
                                path: path.clone(),
                                status: a["status"].as_str().unwrap_or("").to_string(),
                                labels: a["labels"].clone(),
                            });
                        }
                        raw.lock().expect("webhook log").push((path, doc));
                        Response::builder().status(200).body(Full::new(Bytes::new()))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, seen, raw, task })
    }

    /// Every alert delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.seen.lock().expect("webhook log").clone()
    }

    /// Every request body received so far, with its path.
    pub fn bodies(&self) -> Vec<(String, serde_json::Value)> {
        self.raw.lock().expect("webhook log").clone()
    }

    /// The first delivered alert `want` accepts, waiting up to `wait`; panics naming `what` and
    /// showing everything received when none arrives.
    pub async fn expect(&self, what: &str, wait: Duration, want: impl Fn(&Delivered) -> bool) -> Delivered {
        match self.wait_for(wait, want).await {
            Some(d) => d,
            None => panic!("{what} never reached the webhook; it received {:?}", self.bodies()),
        }
    }

    /// Waits up to `wait` for a delivered alert that `want` accepts.
    pub async fn wait_for(&self, wait: Duration, want: impl Fn(&Delivered) -> bool) -> Option<Delivered> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(d) = self.delivered().into_iter().find(|d| want(d)) {
                return Some(d);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `text` with every duration in a range selector (`[5m]`), an `offset` or a `for:` divided by
/// `factor` and written in seconds (at least 1s): the rules as they are, on a faster clock.
pub fn scale_durations(text: &str, factor: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let at = ["[", "offset ", "for: "]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min();
        let Some((i, len)) = at else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i + len]);
        rest = &rest[i + len..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit = rest[digits..].chars().next();
        let secs = match (rest[..digits].parse::<u64>(), unit) {
            (Ok(n), Some('s')) => n,
            (Ok(n), Some('m')) => n * 60,
            (Ok(n), Some('h')) => n * 3600,
            (Ok(n), Some('d')) => n * 86_400,
            _ => continue,
        };
        out.push_str(&format!("{}s", (secs / factor).max(1)));
        rest = &rest[digits + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_scaled_where_rules_hold_them() {
        let rules = "expr: rate(x[5m]) > 1 and y offset 1d\n        for: 2m\n        record: a:rate5m\n        description: over 1h";
        assert_eq!(
            super::scale_durations(rules, 60),
            "expr: rate(x[5s]) > 1 and y offset 1440s\n        for: 2s\n        record: a:rate5m\n        description: over 1h"
        );
        assert_eq!(
            super::scale_durations("m[30s] [$__rate_interval]", 60),
            "m[1s] [$__rate_interval]"
        );
    }
}
