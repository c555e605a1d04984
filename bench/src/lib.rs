//! Load harness and benches for the gateway; see `bench/README.md`. The library holds what the
//! load drivers share: the command lines of the processes under test, child processes, ports,
//! CPU time from `/proc`, medians.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// The body of nginx's `location /` as a bare proxy to the `backend` upstream: HTTP/1.1 and
/// keep-alive to it, nothing else.
pub const NGINX_BARE: &str = "proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";";

/// What makes nginx the gateway's peer, added to [`NGINX_BARE`] in its `location /`: the header
/// work the gateway does on every request (the client's Host kept, `X-Forwarded-For`, `-Proto` and
/// `-Host`, `Forwarded` (RFC 7239), an `X-Request-Id` sent upstream and returned), as an
/// operator putting nginx in the gateway's place would configure it. Trace context has no
/// counterpart in Debian's nginx and is left out, so the gateway still does more per request.
pub const NGINX_FIELDS: &str = "proxy_set_header Host $http_host; \
     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
     proxy_set_header X-Forwarded-Proto $scheme; \
     proxy_set_header X-Forwarded-Host $http_host; \
     proxy_set_header Forwarded \"for=$remote_addr;proto=$scheme;host=\\\"$http_host\\\"\"; \
     proxy_set_header X-Request-Id $request_id; \
     add_header X-Request-Id $request_id always;";

/// nginx in `dir` (its prefix) with the config `conf`, pinned to core 0, output discarded.
pub fn nginx_command(dir: &Path, conf: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "0", "nginx", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The gateway `bin` with one worker on the config `conf`, pinned to core 0 when `pinned`;
/// `log` receives its stderr; `quiet` sets `RUST_LOG=warn` (otherwise the config's log
/// settings apply).
pub fn gateway_command(
    bin: &Path,
    conf: &Path,
    pinned: bool,
    log: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<Command> {
    let mut c = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(["--worker-threads", "1", "run", "--config"])
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(match log {
            Some(l) => Stdio::from(std::fs::File::create(l)?),
            None => Stdio::null(),
        });
    if quiet {
        c.env("RUST_LOG", "warn");
    } else {
        c.env_remove("RUST_LOG");
    }
    Ok(c)
}

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `cmd`; `name` is for messages.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop; killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on 127.0.0.1:`port` (5 s at most).
pub fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} never opened")
}

/// The pid and every descendant (nginx's workers are children of its master).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    let all: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        pids.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    pids
}

/// User + system CPU seconds of a process tree.
pub fn cpu_seconds(root: u32) -> f64 {
    let tck = 100.0; // CLK_TCK on Linux
    process_tree(root)
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            // after ')' the fields start at #3 (state): utime is #14, stime #15.
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / tck)
        })
        .sum()
}

/// The median of the finite values (NaN when there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
