//! The tap: a bounded channel from the request path to whoever learns from it (the baseline
//! engine). The request path only ever calls [`Tap::send`], which never waits: when the channel
//! is full the event is dropped and counted.
//!
//! The channel is crossbeam's unbounded (list) channel with the bound kept by the tap: a send
//! and a receive are a few atomic operations, with no lock and no semaphore (tokio's bounded
//! channel takes a mutex to give a permit back on every receive), events are written into small
//! blocks freed as they are read (memory just used, not a cold slot of a large ring), and the
//! consumer polls it on a timer rather than waiting on it, so nothing is ever woken by a send.
//!
//! The receiving side is taken once by a consumer ([`Tap::take_receiver`]). Until one is
//! attached, events fill the channel and the rest are dropped and counted, so
//! `gateway_tap_events_total{result="dropped"}` shows an engine that is missing or behind.

use std::sync::Mutex;

use baseline_engine::{RequestEvent, RuntimeSample};
use crossbeam_channel::Sender;
/// The tap's receiving ends (crossbeam's): polled with `try_recv`, never waited on.
pub use crossbeam_channel::{Receiver, TryRecvError};
use prometheus_client::metrics::counter::Counter;

use super::{Metrics, TapLabels};

/// Both channels of the tap and their counters.
#[derive(Debug)]
pub struct Tap {
    requests: Sender<RequestEvent>,
    runtime: Sender<RuntimeSample>,
    receivers: Mutex<Option<(Receiver<RequestEvent>, Receiver<RuntimeSample>)>>,
    capacity: usize,
    sent: Counter,
    dropped: Counter,
}

/// Runtime samples kept when nobody reads them (one per interval: a minute at 1 s).
const RUNTIME_CAPACITY: usize = 64;

// === impl Tap ===

impl Tap {
    /// A tap holding up to `capacity` request events.
    pub fn new(capacity: usize, metrics: &Metrics) -> Tap {
        // Unbounded (a list of small blocks, freed as they are read, so the memory a send
        // writes to is memory just used), with the bound kept here: an array channel of the
        // full capacity made every send write to a cold part of a ring of about a megabyte.
        let (requests, rx) = crossbeam_channel::unbounded();
        let (runtime, rrx) = crossbeam_channel::bounded(RUNTIME_CAPACITY);
        let counter = |result| metrics.tap_events.get_or_create(&TapLabels { result }).clone();
        let sent = counter("sent");
        let dropped = counter("dropped");
        metrics.tap_capacity.set(capacity as i64);
        Tap {
            requests,
            runtime,
            receivers: Mutex::new(Some((rx, rrx))),
            capacity: capacity.max(1),
            sent,
            dropped,
        }
    }

    /// Offers an event; never waits. Returns whether it was queued.
    pub fn send(&self, event: RequestEvent) -> bool {
        // Full (the bound is the tap's: the channel itself is unbounded), or no consumer left.
        if self.requests.len() >= self.capacity || self.requests.try_send(event).is_err() {
            self.dropped.inc();
            return false;
        }
        self.sent.inc();
        true
    }

    /// Offers a runtime sample; never waits (the oldest are not kept when nobody reads).
    pub fn send_runtime(&self, sample: RuntimeSample) -> bool {
        self.runtime.try_send(sample).is_ok()
    }

    /// The receiving ends, for the one consumer; `None` once taken.
    pub fn take_receiver(&self) -> Option<(Receiver<RequestEvent>, Receiver<RuntimeSample>)> {
        self.receivers.lock().ok()?.take()
    }

    /// Request events waiting in the channel.
    pub fn depth(&self) -> usize {
        self.requests.len()
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> RequestEvent {
        RequestEvent {
            status,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_tap_drops_and_counts_without_waiting() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let tap = Tap::new(4, &metrics);
        // Nobody reads: four fit, the rest are dropped at once (a waiting send would hang this
        // single-threaded test).
        let queued = (0..100).filter(|_| tap.send(event(200))).count();
        assert_eq!(queued, 4);
        assert_eq!(tap.depth(), 4);
        assert_eq!(tap.dropped(), 96);
        // A consumer drains; sending works again.
        let (rx, _) = tap.take_receiver().expect("receiver");
        assert!(tap.take_receiver().is_none(), "one consumer");
        assert_eq!(rx.try_recv().map(|e| e.status).ok(), Some(200));
        assert_eq!(tap.depth(), 3);
        assert!(tap.send(event(404)));
        // A consumer that went away: events are dropped, not queued forever.
        drop(rx);
        assert!(!tap.send(event(500)));
    }
}
