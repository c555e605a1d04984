//! CPU profiles with the pprof crate: on demand from the admin listener
//! (`GET /debug/pprof/profile?seconds=N[&format=svg]`), and [`capture_profile`] for the parts
//! of the gateway that notice something abnormal (the baseline engine, when the runtime looks
//! wrong), which writes to a bounded directory of recent captures.
//!
//! One capture runs at a time in the process (the profiler is process-wide); a second one is
//! refused (409 on the admin listener). Sampling runs on a blocking-pool thread, never on a
//! runtime worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Metrics, ProfileLabels};

/// Longest capture.
pub const MAX_SECONDS: u64 = 60;
/// Samples per second.
const FREQUENCY: i32 = 99;

/// What a capture produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pprof's protobuf (`go tool pprof`, `pprof`, Grafana Pyroscope).
    Pprof,
    /// A flamegraph.
    Svg,
}

/// Why a capture did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Another capture is running.
    #[error("a profile is already being captured")]
    Busy,
    /// The profiler failed.
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// The one-at-a-time guard and the counters.
#[derive(Debug, Default)]
pub struct Profiles {
    busy: Arc<AtomicBool>,
}

struct Release(Arc<AtomicBool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn count(metrics: &Metrics, trigger: &'static str, result: &'static str) {
    metrics.profiles.get_or_create(&ProfileLabels { trigger, result }).inc();
}

// === impl Profiles ===

impl Profiles {
    /// Samples the whole process for `seconds` (1..=60) and renders the result. `trigger`
    /// (`admin` or `internal`) labels the metric.
    pub async fn capture(
        &self,
        metrics: &Metrics,
        trigger: &'static str,
        seconds: u64,
        format: Format,
    ) -> Result<Vec<u8>, ProfileError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            count(metrics, trigger, "busy");
            return Err(ProfileError::Busy);
        }
        let release = Release(self.busy.clone());
        let seconds = seconds.clamp(1, MAX_SECONDS);
        let result = tokio::task::spawn_blocking(move || {
            let _release = release;
            sample(seconds, format)
        })
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))
        .and_then(|r| r);
        count(metrics, trigger, if result.is_ok() { "ok" } else { "failed" });
        result
    }
}

fn sample(seconds: u64, format: Format) -> Result<Vec<u8>, ProfileError> {
    let failed = |e: pprof::Error| ProfileError::Failed(e.to_string());
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // Unwinding through these while they hold their own locks can deadlock.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(failed)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let report = guard.report().build().map_err(failed)?;
    drop(guard);
    let mut out = Vec::new();
    match format {
        Format::Pprof => {
            use pprof::protos::Message;
            let profile = report.pprof().map_err(failed)?;
            profile
                .encode(&mut out)
                .map_err(|e| ProfileError::Failed(e.to_string()))?;
        }
        Format::Svg => report.flamegraph(&mut out).map_err(failed)?,
    }
    Ok(out)
}

/// Captures a profile in the background and writes it to `dir` as
/// `<unix ms>-<reason>.pb`, keeping the newest `keep` captures there. Returns false (and does
/// nothing) when a capture is already running.
pub fn capture_profile(shared: &Arc<crate::Shared>, reason: &'static str) -> bool {
    if shared.profiles.busy.load(Ordering::Acquire) {
        count(&shared.metrics, "internal", "busy");
        return false;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let cfg = shared.snapshot.load().config.telemetry.profiles.clone();
        let result = shared
            .profiles
            .capture(&shared.metrics, "internal", cfg.seconds, Format::Pprof)
            .await;
        match result {
            Ok(bytes) => match store(&cfg.dir, cfg.keep, reason, &bytes) {
                Ok(path) => tracing::warn!(reason, path = %path.display(), "profile captured"),
                Err(e) => tracing::warn!(reason, dir = %cfg.dir.display(), error = %e, "profile not written"),
            },
            Err(e) => tracing::warn!(reason, error = %e, "profile not captured"),
        }
    });
    true
}

/// Writes one capture and removes the oldest beyond `keep`.
fn store(dir: &Path, keep: usize, reason: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name: String = reason
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    let path = dir.join(format!("{stamp:013}-{name}.pb"));
    std::fs::write(&path, bytes)?;
    let mut captures: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .collect();
    captures.sort();
    let excess = captures.len().saturating_sub(keep.max(1));
    for old in &captures[..excess] {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_directory_keeps_the_newest() -> std::io::Result<()> {
        let dir = tempfile_dir();
        for i in 0..5 {
            store(&dir, 3, &format!("r{i}"), b"x")?;
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3);
        assert!(
            names[0].ends_with("-r2.pb") && names[2].ends_with("-r4.pb"),
            "{names:?}"
        );
        std::fs::remove_dir_all(&dir)
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("gateway-profile-test-{}", std::process::id()))
    }
}
