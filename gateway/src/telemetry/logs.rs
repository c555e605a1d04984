//! Logs: tracing-subscriber writing text or JSON to stderr, with a level filter that a config
//! reload can change.
//!
//! The filter comes from `RUST_LOG` when it is set (and then stays as given), else from
//! `telemetry.logs.level` in the config, which reloads apply. The format is chosen once at start
//! (`--log-format`, else `telemetry.logs.format`).
//!
//! Secrets stay out: the request path logs the subject, never a token, a cookie or an
//! `Authorization` header, and the access log carries the path without its query string.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
    current: Mutex<String>,
    dropped: tracing_appender::non_blocking::ErrorCounter,
    format: Format,
    writer: tracing_appender::non_blocking::NonBlocking,
}

/// Dropping it flushes the writer thread's last lines ([`finish`]).
static WRITER: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

/// Lines the writer thread may hold; beyond it lines are dropped (and counted), never waited
/// for.
const BUFFERED_LINES: usize = 65_536;

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the process's subscriber. `level` is the config's filter, used unless `RUST_LOG`
/// is set.
pub fn init(format: Format, level: &str) {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let from_env = env.is_some();
    let spec = env.unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Lines are formatted where they happen and written by a thread of their own, in batches:
    // a request never waits for stderr.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("gateway-log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let dropped = writer.error_counter();
    let lines = writer.clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = match format {
        Format::Json => Registry::default()
            .with(filter)
            .with(fmt.json().flatten_event(true))
            .try_init(),
        Format::Text => Registry::default().with(filter).with(fmt).try_init(),
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            from_env,
            current: Mutex::new(spec),
            dropped,
            format,
            writer: lines,
        });
        if let Ok(mut w) = WRITER.lock() {
            *w = Some(guard);
        }
    }
}

/// Applies a new level filter from the config (a reload). Does nothing when `RUST_LOG` set the
/// filter or no subscriber was installed (tests in-process). Returns whether it changed.
pub fn apply(level: &str) -> bool {
    let Some(c) = CONTROL.get() else { return false };
    if c.from_env {
        return false;
    }
    let Ok(mut current) = c.current.lock() else {
        return false;
    };
    if *current == level {
        return false;
    }
    let Ok(filter) = EnvFilter::try_new(level) else {
        return false;
    };
    // Said under whichever of the two filters lets it through.
    let said = tracing::enabled!(target: "gateway::telemetry::logs", tracing::Level::INFO);
    if said {
        tracing::info!(from = %current, to = level, "log level changed");
    }
    if c.handle.reload(filter).is_err() {
        return false;
    }
    if !said {
        tracing::info!(from = %current, to = level, "log level changed");
    }
    *current = level.to_string();
    true
}

/// The format of the gateway's own subscriber, when it is installed.
pub fn format() -> Option<Format> {
    CONTROL.get().map(|c| c.format)
}

/// Queues one whole line (ending in `\n`) for the writer thread; dropped and counted if it is
/// behind.
pub fn write_line(line: &[u8]) {
    if let Some(c) = CONTROL.get() {
        let _ = std::io::Write::write_all(&mut c.writer.clone(), line);
    }
}

/// Writes out the lines still queued; call once, as the process ends.
pub fn finish() {
    let guard = WRITER.lock().ok().and_then(|mut w| w.take());
    drop(guard);
}

/// Log lines dropped so far because the writer thread was behind.
pub fn dropped() -> u64 {
    CONTROL.get().map(|c| c.dropped.dropped_lines() as u64).unwrap_or(0)
}

/// Whether `spec` is a valid filter (`info`, `warn,gateway::access=info`, ...).
pub fn check_level(spec: &str) -> Result<(), String> {
    EnvFilter::try_new(spec)
        .map(|_| ())
        .map_err(|e| format!("`{spec}` is not a log filter like `info` or `warn,gateway::access=info`: {e}"))
}
