//! The engine's anomalies as alerts, posted straight to Alertmanager's v2 API and to webhooks
//! (`engine.alerts`), for installs without Prometheus. They carry the names and labels of the
//! Prometheus rules in `alerts/`, so Alertmanager routes and inhibits them the same way.
//!
//! The engine loop calls [`Notifier::fire`] and [`Notifier::resolve`] as anomalies start and
//! end (an alert already firing is not raised again: one notification per start, one per end)
//! and [`Notifier::flush`] once per drain. Sending happens on a task of its own behind a bounded
//! queue, so the engine never waits on a receiver. Alertmanager is sent every firing alert again
//! every `resend_every`, with an end four of those ahead: a lost send is made up by the next, and
//! the alerts of a gateway that went away end by themselves. Webhooks get the changes only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::EngineAlerts;
use crate::telemetry::{AlertDeliveryLabels, Metrics};

/// Labels or annotations of an alert.
pub type Labels = BTreeMap<String, String>;

/// Batches waiting for the sender at most; beyond, a batch is dropped (and counted).
const QUEUE: usize = 64;
/// Time a receiver has to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Firing {
    annotations: Labels,
    starts_ms: u64,
}

/// What the sender is handed: alerts as Alertmanager's API takes them, and whether they are
/// changes (also for webhooks) or a refresh (Alertmanager only).
struct Batch {
    alerts: Vec<Value>,
    changes: bool,
}

/// Tracks the firing alerts and hands changes and refreshes to the sender.
pub struct Notifier {
    firing: HashMap<Labels, Firing>,
    changed: Vec<Value>,
    resend_every: Duration,
    next_refresh: Instant,
    instance: String,
    tx: Option<tokio::sync::mpsc::Sender<Batch>>,
    metrics: Metrics,
}

impl Notifier {
    /// A notifier for `cfg`; with no receiver configured it only keeps state. Starts the sender
    /// task (on the current runtime) otherwise.
    pub fn new(cfg: &EngineAlerts, metrics: &Metrics) -> Notifier {
        let tx = (!cfg.alertmanagers.is_empty() || !cfg.webhooks.is_empty()).then(|| {
            // Every outcome a configured target can have exists from the start, at 0.
            let targets = [
                ("alertmanager", !cfg.alertmanagers.is_empty()),
                ("webhook", !cfg.webhooks.is_empty()),
            ];
            for (target, _) in targets.iter().filter(|(_, on)| *on) {
                for result in ["sent", "failed"] {
                    let _ = metrics
                        .engine_alerts
                        .get_or_create(&AlertDeliveryLabels { target, result });
                }
            }
            let _ = metrics.engine_alerts.get_or_create(&AlertDeliveryLabels {
                target: "queue",
                result: "dropped",
            });
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            tokio::spawn(send_loop(cfg.clone(), rx, metrics.clone()));
            tx
        });
        Notifier {
            firing: HashMap::new(),
            changed: Vec::new(),
            resend_every: cfg.resend_every,
            next_refresh: Instant::now() + cfg.resend_every,
            instance: cfg.instance.clone(),
            tx,
            metrics: metrics.clone(),
        }
    }

    /// Raises the alert `name` with `labels` (plus `alertname` and `instance`), unless it is
    /// already firing.
    pub fn fire(&mut self, name: &str, labels: &[(&str, &str)], annotations: &[(&str, String)], now_ms: u64) {
        let key = self.key(name, labels);
        if self.firing.contains_key(&key) {
            return;
        }
        let f = Firing {
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            starts_ms: now_ms,
        };
        self.changed.push(self.document(&key, &f, None, now_ms));
        self.firing.insert(key, f);
        self.metrics.engine_alerts_firing.set(self.firing.len() as i64);
    }

    /// Resolves the alert `name` with `labels`, if it is firing.
    pub fn resolve(&mut self, name: &str, labels: &[(&str, &str)], now_ms: u64) {
        // Called for every series back in its band at every tick: nothing to build when nothing
        // fires.
        if self.firing.is_empty() {
            return;
        }
        let key = self.key(name, labels);
        if let Some(f) = self.firing.remove(&key) {
            self.changed.push(self.document(&key, &f, Some(now_ms), now_ms));
            self.metrics.engine_alerts_firing.set(self.firing.len() as i64);
        }
    }

    /// Whether the alert `name` with `labels` is firing.
    pub fn is_firing(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.firing.contains_key(&self.key(name, labels))
    }

    /// Hands the changes since the last flush to the sender, and every firing alert once per
    /// `resend_every`.
    pub fn flush(&mut self, now_ms: u64) {
        if !self.changed.is_empty() {
            let alerts = std::mem::take(&mut self.changed);
            self.hand(Batch { alerts, changes: true });
        }
        if Instant::now() >= self.next_refresh {
            self.next_refresh = Instant::now() + self.resend_every;
            if !self.firing.is_empty() {
                let alerts = self
                    .firing
                    .iter()
                    .map(|(k, f)| self.document(k, f, None, now_ms))
                    .collect();
                self.hand(Batch { alerts, changes: false });
            }
        }
    }

    fn hand(&self, batch: Batch) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(batch).is_err() {
            count(&self.metrics, "queue", "dropped");
        }
    }

    fn key(&self, name: &str, labels: &[(&str, &str)]) -> Labels {
        let mut key: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        key.insert("alertname".into(), name.into());
        key.insert("instance".into(), self.instance.clone());
        key
    }

    /// The alert as Alertmanager's `POST /api/v2/alerts` takes it: a firing one ends four
    /// resend intervals ahead unless sent again.
    fn document(&self, labels: &Labels, f: &Firing, ended_ms: Option<u64>, now_ms: u64) -> Value {
        let ends = ended_ms.unwrap_or(now_ms + 4 * self.resend_every.as_millis() as u64);
        json!({
            "labels": labels,
            "annotations": f.annotations,
            "startsAt": crate::calendar::rfc3339_ms(f.starts_ms),
            "endsAt": crate::calendar::rfc3339_ms(ends),
            "status": if ended_ms.is_some() { "resolved" } else { "firing" },
        })
    }
}

fn count(metrics: &Metrics, target: &'static str, result: &'static str) {
    metrics
        .engine_alerts
        .get_or_create(&AlertDeliveryLabels { target, result })
        .inc();
}

async fn send_loop(cfg: EngineAlerts, mut rx: tokio::sync::mpsc::Receiver<Batch>, metrics: Metrics) {
    let tls = match crate::upstream::client_tls("", true, &[], None, "engine.alerts") {
        Ok(tls) => Arc::new(tls),
        Err(e) => {
            tracing::error!(error = ?e, "no TLS client for alert receivers; alerts are not sent");
            return;
        }
    };
    while let Some(batch) = rx.recv().await {
        // Alertmanager's API takes the alerts without `status` (it follows from `endsAt`).
        let api: Vec<Value> = batch
            .alerts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if let Some(o) = a.as_object_mut() {
                    o.remove("status");
                }
                a
            })
            .collect();
        let api = Bytes::from(Value::Array(api).to_string());
        for base in &cfg.alertmanagers {
            let url = format!("{base}/api/v2/alerts");
            post(&url, api.clone(), &tls, &metrics, "alertmanager").await;
        }
        if !batch.changes || cfg.webhooks.is_empty() {
            continue;
        }
        let all_resolved = batch.alerts.iter().all(|a| a["status"] == "resolved");
        let hook = json!({
            "version": "4",
            "receiver": "gateway",
            "status": if all_resolved { "resolved" } else { "firing" },
            "alerts": batch.alerts,
        });
        let hook = Bytes::from(hook.to_string());
        for url in &cfg.webhooks {
            post(url, hook.clone(), &tls, &metrics, "webhook").await;
        }
    }
}

async fn post(url: &str, body: Bytes, tls: &Arc<rustls::ClientConfig>, metrics: &Metrics, target: &'static str) {
    let req = http::Request::post("/").header(http::header::CONTENT_TYPE, "application/json");
    match crate::outbound::exchange(url, req, body, tls, 64 * 1024, SEND_TIMEOUT).await {
        Ok((status, _, _)) if status.is_success() => count(metrics, target, "sent"),
        Ok((status, _, body)) => {
            count(metrics, target, "failed");
            let body = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
            tracing::warn!(target_kind = target, url, %status, body, "alert not accepted");
        }
        Err(e) => {
            count(metrics, target, "failed");
            tracing::warn!(target_kind = target, url, error = %e, "alert not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier() -> Notifier {
        let cfg = EngineAlerts {
            instance: "gw-1".into(),
            ..EngineAlerts::default()
        };
        Notifier::new(
            &cfg,
            &Metrics::register(&mut prometheus_client::registry::Registry::default()),
        )
    }

    #[test]
    fn an_alert_fires_once_and_resolves_once() {
        let mut n = notifier();
        let labels = [("severity", "ticket")];
        n.fire("GatewayRuntimeAnomaly", &labels, &[("summary", "x".into())], 1_000);
        n.fire("GatewayRuntimeAnomaly", &labels, &[("summary", "x".into())], 2_000);
        assert_eq!(n.changed.len(), 1, "raised again while firing");
        assert!(n.is_firing("GatewayRuntimeAnomaly", &labels));
        let doc = &n.changed[0];
        assert_eq!(doc["labels"]["alertname"], "GatewayRuntimeAnomaly");
        assert_eq!(doc["labels"]["instance"], "gw-1");
        assert_eq!(doc["startsAt"], "1970-01-01T00:00:01.000000Z");
        // Firing: ends four resend intervals (4 min) ahead unless sent again.
        assert_eq!(doc["endsAt"], "1970-01-01T00:04:01.000000Z");
        n.flush(2_000);
        assert!(n.changed.is_empty());
        n.resolve("GatewayRuntimeAnomaly", &labels, 9_000);
        n.resolve("GatewayRuntimeAnomaly", &labels, 10_000);
        assert_eq!(n.changed.len(), 1, "resolved twice");
        assert_eq!(n.changed[0]["status"], "resolved");
        assert_eq!(n.changed[0]["endsAt"], "1970-01-01T00:00:09.000000Z");
        assert!(!n.is_firing("GatewayRuntimeAnomaly", &labels));
        // Another scope is another alert.
        n.fire("GatewayRouteErrorAnomaly", &[("scope", "route:a")], &[], 11_000);
        n.fire("GatewayRouteErrorAnomaly", &[("scope", "route:b")], &[], 11_000);
        assert_eq!(n.firing.len(), 2);
    }
}
