//! The runtime sampler: every interval, one [`RuntimeSample`] from tokio's scheduler (through
//! tokio-metrics' `RuntimeMonitor`), from the task monitors around connection handling and
//! request handling, and from the process (`/proc/self`). Each sample updates the runtime
//! metrics and is offered to the tap for the baseline engine.
//!
//! Needs tokio built with `--cfg tokio_unstable` (`.cargo/config.toml`) for poll counts and
//! times, local and blocking queues, blocking threads and budget-forced yields.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baseline_engine::{RuntimeSample, TaskSample};
use tokio_metrics::{RuntimeMonitor, TaskMetrics, TaskMonitor};
use tokio_util::sync::CancellationToken;

use super::TaskGroupLabels;
use crate::Shared;

/// Polls slower than this count as slow.
pub const SLOW_POLL: Duration = Duration::from_millis(1);

/// The task monitors the data path instruments.
///
/// Timing every poll costs about a microsecond per request, so only one connection in
/// `sample_every` and one request in `sample_every` is instrumented (`telemetry.task_sampling`;
/// 1 instruments all). Means and ratios stay representative; counts are of the sampled tasks.
#[derive(Debug)]
pub struct Monitors {
    /// Around sampled client connections' tasks.
    pub connections: TaskMonitor,
    /// Around sampled requests' handling.
    pub requests: TaskMonitor,
    sample_every: u64,
    connections_seen: AtomicU64,
    requests_seen: AtomicU64,
}

/// A future, instrumented by a task monitor or not.
pub type Sampled<F> = tokio_util::either::Either<F, tokio_metrics::Instrumented<F>>;

// === impl Monitors ===

impl Monitors {
    /// Monitors instrumenting one task in `sample_every` (at least 1).
    pub fn new(sample_every: u64) -> Monitors {
        let monitor = || {
            let mut b = TaskMonitor::builder();
            b.with_slow_poll_threshold(SLOW_POLL);
            b.build()
        };
        Monitors {
            connections: monitor(),
            requests: monitor(),
            sample_every: sample_every.max(1),
            connections_seen: AtomicU64::new(0),
            requests_seen: AtomicU64::new(0),
        }
    }

    /// Whether the next task counted in `seen` is one to instrument.
    fn due(&self, seen: &AtomicU64) -> bool {
        seen.fetch_add(1, Ordering::Relaxed) % self.sample_every == 0
    }

    fn sample<F: std::future::Future>(&self, seen: &AtomicU64, monitor: &TaskMonitor, f: F) -> Sampled<F> {
        if self.due(seen) {
            tokio_util::either::Either::Right(monitor.instrument(f))
        } else {
            tokio_util::either::Either::Left(f)
        }
    }

    /// A connection's task, instrumented when sampled.
    pub fn connection<F: std::future::Future>(&self, f: F) -> Sampled<F> {
        self.sample(&self.connections_seen, &self.connections, f)
    }

    /// A request's handling, instrumented when sampled.
    pub fn request<F: std::future::Future>(&self, f: F) -> Sampled<F> {
        self.sample(&self.requests_seen, &self.requests, f)
    }

    /// The monitor for the next request, when it is sampled: for a caller that awaits the
    /// request's future where it stands rather than moving it into a wrapper.
    pub fn sample_request(&self) -> Option<&TaskMonitor> {
        self.due(&self.requests_seen).then_some(&self.requests)
    }
}

fn task_sample(m: &TaskMetrics) -> TaskSample {
    TaskSample {
        instrumented: m.instrumented_count,
        dropped: m.dropped_count,
        polls: m.total_poll_count,
        slow_polls: m.total_slow_poll_count,
        mean_poll: m.mean_poll_duration(),
        mean_scheduled: m.mean_scheduled_duration(),
        long_delays: m.total_long_delay_count,
    }
}

/// Process figures from `/proc/self`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Process {
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// CPU time used so far (user + system).
    pub cpu: Duration,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads the process figures; fields that cannot be read stay zero.
pub fn process() -> Process {
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    // Fields 14 and 15 (utime, stime) of /proc/self/stat, in USER_HZ ticks (100 per second on
    // Linux); the command name in field 2 may hold spaces, so count from its closing paren.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(Duration::from_millis(ticks * 10))
        })
        .unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Process {
        resident_bytes,
        cpu,
        open_fds,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Samples the runtime every `interval` (re-read from the config each time) until `stop`.
pub async fn sample(shared: Arc<Shared>, handle: tokio::runtime::Handle, stop: CancellationToken) {
    let mut runtime = RuntimeMonitor::new(&handle).intervals();
    let mut connections = shared.monitors.connections.intervals();
    let mut requests = shared.monitors.requests.intervals();
    let m = &shared.metrics;
    let group = |g: &'static str| TaskGroupLabels { group: g };
    let mut cpu_before = process().cpu;
    let mut dropped_before = shared.tap.dropped();
    let mut log_dropped_before = super::logs::dropped();
    loop {
        let interval = shared.snapshot.load().config.telemetry.runtime_interval;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (Some(rt), Some(conns), Some(reqs)) = (runtime.next(), connections.next(), requests.next()) else {
            return;
        };
        let proc = process();
        let dropped = shared.tap.dropped();
        let sample = RuntimeSample {
            unix_ms: crate::unix_now() as u64 * 1000,
            elapsed: rt.elapsed,
            workers: rt.workers_count,
            busy_ratio: if rt.workers_count == 0 || rt.elapsed.is_zero() {
                0.0
            } else {
                (rt.busy_ratio() / rt.workers_count as f64).clamp(0.0, 1.0)
            },
            parks: rt.total_park_count,
            polls: rt.total_polls_count,
            mean_poll: rt.mean_poll_duration,
            global_queue: rt.global_queue_depth,
            local_queue: rt.total_local_queue_depth,
            alive_tasks: rt.live_tasks_count,
            blocking_threads: rt.blocking_threads_count,
            blocking_queue: rt.blocking_queue_depth,
            budget_forced_yields: rt.budget_forced_yield_count,
            connections: task_sample(&conns),
            requests: task_sample(&reqs),
            resident_bytes: proc.resident_bytes,
            cpu: proc.cpu.saturating_sub(cpu_before),
            open_fds: proc.open_fds,
            tap_dropped: dropped.saturating_sub(dropped_before),
        };
        cpu_before = proc.cpu;
        dropped_before = dropped;

        m.runtime_workers.set(sample.workers as i64);
        m.runtime_busy_ratio.set(sample.busy_ratio);
        m.runtime_parks.inc_by(sample.parks);
        m.runtime_polls.inc_by(sample.polls);
        m.runtime_mean_poll.set(secs(sample.mean_poll));
        m.runtime_global_queue.set(sample.global_queue as i64);
        m.runtime_local_queue.set(sample.local_queue as i64);
        m.runtime_alive_tasks.set(sample.alive_tasks as i64);
        m.runtime_blocking_threads.set(sample.blocking_threads as i64);
        m.runtime_blocking_queue.set(sample.blocking_queue as i64);
        m.runtime_budget_forced_yields.inc_by(sample.budget_forced_yields);
        for (g, t) in [("connections", &sample.connections), ("requests", &sample.requests)] {
            m.task_polls.get_or_create(&group(g)).inc_by(t.polls);
            m.task_slow_polls.get_or_create(&group(g)).inc_by(t.slow_polls);
            m.task_long_delays.get_or_create(&group(g)).inc_by(t.long_delays);
            m.task_mean_poll.get_or_create(&group(g)).set(secs(t.mean_poll));
            m.task_mean_scheduled
                .get_or_create(&group(g))
                .set(secs(t.mean_scheduled));
        }
        m.process_resident.set(sample.resident_bytes as i64);
        m.process_cpu.inc_by(secs(sample.cpu));
        m.process_fds.set(sample.open_fds as i64);
        m.tap_depth.set(shared.tap.depth() as i64);
        let log_dropped = super::logs::dropped();
        m.log_lines_dropped
            .inc_by(log_dropped.saturating_sub(log_dropped_before));
        log_dropped_before = log_dropped;
        shared.tap.send_runtime(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read() {
        let p = process();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        // Burn some CPU and see the clock move (ticks are 10 ms).
        let before = p.cpu;
        let mut x = 0u64;
        while process().cpu <= before {
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(i * i);
            }
        }
        std::hint::black_box(x);
    }
}
