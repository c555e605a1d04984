//! Route stage: picks the route for a request. Comes after the request-head checks and before
//! forwarding.
//!
//! Precedence: routes for the exact host, then for the most specific `*.domain` wildcard, then
//! routes without a host. Within the first of those groups that has a route for the path, the
//! longest path prefix (on segment boundaries) wins; among routes with that prefix the first
//! whose methods include the request's wins, and if none does the answer is 405 with `Allow`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::RouteConfig;
use crate::telemetry::{MethodClass, Metrics, RequestLabels, RouteLabels};
use crate::upstream::Pool;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name.
    pub name: std::sync::Arc<str>,
    /// Path prefix.
    pub prefix: String,
    /// Methods (empty = any).
    pub methods: Vec<Method>,
    /// Header conditions (value `None`: present with any value).
    pub headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Pool it forwards to; `None` for a route that answers by itself.
    pub pool: Option<Arc<Pool>>,
    /// What it answers by itself, when it has no pool.
    pub direct: Option<crate::config::DirectAnswer>,
    /// Other pools with a share of its requests: cumulative percent, pool, requests sent there.
    pub split: Vec<(f64, Arc<Pool>, prometheus_client::metrics::counter::Counter)>,
    /// What the split draws on.
    pub split_by: crate::config::SplitBy,
    /// Body limit.
    pub max_body_bytes: u64,
    /// Time to response head, when it replaces the pool's.
    pub request_timeout: Option<std::time::Duration>,
    /// Provider whose bearer tokens the route accepts.
    pub bearer: Option<Arc<crate::identity::provider::Provider>>,
    /// Provider browsers sign in with.
    pub login: Option<Arc<crate::identity::provider::Provider>>,
    /// What an authenticated caller must also satisfy.
    pub requirements: crate::config::Requirements,
    /// Whether requests need a verified client certificate.
    pub client_certificate: bool,
    /// How risk decides its requests.
    pub trust: Option<crate::config::TrustConfig>,
    /// Whether HTTP/3 early data is forwarded for safe methods.
    pub early_data: bool,
    /// What replaces the matched prefix upstream.
    pub rewrite_prefix: Option<String>,
    /// Request header changes.
    pub request_headers: crate::config::HeaderOps,
    /// Response header changes.
    pub response_headers: crate::config::HeaderOps,
    /// Rate limit, when set.
    pub rate_limit: Option<Arc<super::ratelimit::RateLimit>>,
    /// CORS policy, when set.
    pub cors: Option<Arc<super::cors::Cors>>,
    /// Client address rules, when set.
    pub clients: Option<crate::config::ClientRules>,
    /// Compression policy, when set.
    pub compress: Option<super::compress::Compress>,
    /// Metric handles.
    pub metrics: Arc<RouteMetrics>,
}

/// Metric handles of one route, resolved once so the request path does no label hashing.
#[derive(Debug)]
pub struct RouteMetrics {
    name: String,
    family: Metrics,
    requests: [[OnceLock<Counter>; 5]; 8],
    duration: OnceLock<Histogram>,
    /// Trust decisions by [decision][mode].
    decisions: [[OnceLock<Counter>; 2]; 3],
    risk: OnceLock<Histogram>,
}

// === impl Route ===

impl Route {
    /// The pool for one request: its own upstream, or a pool of its `split` by a draw over the
    /// shares (counted there). `key` gives the draw of a sticky split (the client address or
    /// subject): the same key always lands on the same pool while the shares stay.
    pub fn pick_pool(&self, key: impl FnOnce(crate::config::SplitBy) -> Option<u64>) -> Option<&Arc<Pool>> {
        if self.split.is_empty() {
            return self.pool.as_ref();
        }
        let draw = match key(self.split_by) {
            Some(h) => (h % 1_000_000) as f64 / 10_000.0,
            None => fastrand::f64() * 100.0,
        };
        match self.split.iter().find(|(upto, ..)| draw < *upto) {
            Some((_, pool, counter)) => {
                counter.inc();
                Some(pool)
            }
            None => self.pool.as_ref(),
        }
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Handles for `route`.
    pub fn new(route: &str, metrics: &Metrics) -> Self {
        Self {
            name: route.to_string(),
            family: metrics.clone(),
            requests: Default::default(),
            duration: OnceLock::new(),
            decisions: Default::default(),
            risk: OnceLock::new(),
        }
    }

    /// Creates the route's trust series at zero, so they exist before the first decision.
    pub fn init_trust(&self, fail_closed: bool) {
        for decision in ["allow", "step_up", "deny"] {
            for mode in ["enforce", "shadow"] {
                let _ = self
                    .family
                    .trust_decisions
                    .get_or_create(&crate::telemetry::TrustLabels {
                        route: self.name.clone(),
                        decision,
                        mode,
                    });
            }
        }
        let _ = self
            .family
            .trust_unavailable
            .get_or_create(&crate::telemetry::UnavailableLabels {
                route: self.name.clone(),
                policy: if fail_closed { "fail_closed" } else { "last_known" },
            });
        let _ = self.family.risk_score.get_or_create(&RouteLabels {
            route: self.name.clone(),
        });
    }

    /// Counts a trust decision (`allow`, `step_up`, `deny`) and the risk it used.
    pub fn decided(&self, decision: &'static str, shadow: bool, risk: f32) {
        let d = match decision {
            "allow" => 0,
            "step_up" => 1,
            _ => 2,
        };
        let mode = if shadow { "shadow" } else { "enforce" };
        self.decisions[d][usize::from(shadow)]
            .get_or_init(|| {
                self.family
                    .trust_decisions
                    .get_or_create(&crate::telemetry::TrustLabels {
                        route: self.name.clone(),
                        decision,
                        mode,
                    })
                    .clone()
            })
            .inc();
        self.risk
            .get_or_init(|| {
                self.family
                    .risk_score
                    .get_or_create(&RouteLabels {
                        route: self.name.clone(),
                    })
                    .clone()
            })
            .observe(f64::from(risk));
    }

    /// Counts the reasons of a step-up or deny.
    pub fn reasons(&self, decision: &'static str, reasons: &[&'static str]) {
        for &reason in reasons {
            let _ = self
                .family
                .trust_reasons
                .get_or_create(&crate::telemetry::TrustReasonLabels {
                    route: self.name.clone(),
                    decision,
                    reason,
                })
                .inc();
        }
    }

    /// Counts a request decided while the risk view was unavailable.
    pub fn unavailable(&self, fail_closed: bool) {
        let _ = self
            .family
            .trust_unavailable
            .get_or_create(&crate::telemetry::UnavailableLabels {
                route: self.name.clone(),
                policy: if fail_closed { "fail_closed" } else { "last_known" },
            })
            .inc();
    }

    /// Records a request's duration in seconds.
    pub fn observe_duration(&self, seconds: f64) {
        self.duration
            .get_or_init(|| {
                self.family
                    .request_duration
                    .get_or_create(&RouteLabels {
                        route: self.name.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Counts an answered request.
    pub fn count(&self, method: MethodClass, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let cell = &self.requests[method as usize][class];
        cell.get_or_init(|| {
            self.family
                .requests
                .get_or_create(&RequestLabels {
                    route: self.name.clone(),
                    method,
                    status_class: format!("{}xx", class + 1),
                })
                .clone()
        })
        .inc();
    }
}

/// The result of routing.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// This route takes the request.
    Found(&'a Arc<Route>),
    /// A route has the path but not the method; the value is the `Allow` header.
    MethodNotAllowed(String),
    /// Nothing matches.
    NotFound,
}

/// All routes, indexed by host.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    exact: HashMap<String, Vec<usize>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// Whether `headers` meet every condition: the field present with the value (any value for
/// `None`; of several fields of one name, any may match).
fn headers_match(conditions: &[(http::HeaderName, Option<http::HeaderValue>)], headers: &http::HeaderMap) -> bool {
    conditions.iter().all(|(name, want)| match want {
        None => headers.contains_key(name),
        Some(v) => headers.get_all(name).iter().any(|h| h == v),
    })
}

/// Lowercase host without port or trailing dot (borrowed when already in that form).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let h = if raw.starts_with('[') {
        raw.split_once(']').map(|(a, _)| &raw[..a.len() + 1]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(raw)
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

// === impl Router ===

impl Router {
    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Builds the router from routes in file order.
    pub fn new(configs: &[RouteConfig], routes: Vec<Arc<Route>>) -> Self {
        let mut r = Router {
            routes,
            ..Default::default()
        };
        let mut wild: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in configs.iter().enumerate() {
            match c.host.as_deref() {
                None => r.any.push(i),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => wild.entry(suffix.to_string()).or_default().push(i),
                    None => r.exact.entry(h.to_string()).or_default().push(i),
                },
            }
        }
        let order = |v: &mut Vec<usize>, routes: &[Arc<Route>]| {
            // Longest prefix first; at equal prefix, routes with header conditions, then routes
            // with methods, before catch-alls; stable.
            v.sort_by_key(|&i| {
                (
                    std::cmp::Reverse(routes[i].prefix.len()),
                    routes[i].headers.is_empty(),
                    routes[i].methods.is_empty(),
                )
            });
        };
        for v in r.exact.values_mut() {
            order(v, &r.routes);
        }
        order(&mut r.any, &r.routes);
        let mut wild: Vec<_> = wild.into_iter().collect();
        for (_, v) in wild.iter_mut() {
            order(v, &r.routes);
        }
        wild.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        r.wildcard = wild;
        r
    }

    fn in_group<'a>(
        &'a self,
        group: &[usize],
        path: &str,
        method: &Method,
        headers: &http::HeaderMap,
    ) -> Option<RouteMatch<'a>> {
        let mut matched_len: Option<usize> = None;
        let mut allow: Vec<&str> = Vec::new();
        for &i in group {
            let route = &self.routes[i];
            if let Some(len) = matched_len {
                if route.prefix.len() != len {
                    break;
                }
            }
            if !prefix_matches(&route.prefix, path) || !headers_match(&route.headers, headers) {
                continue;
            }
            if route.methods.is_empty() || route.methods.contains(method) {
                return Some(RouteMatch::Found(route));
            }
            matched_len = Some(route.prefix.len());
            allow.extend(route.methods.iter().map(|m| m.as_str()));
        }
        matched_len.map(|_| {
            allow.sort_unstable();
            allow.dedup();
            RouteMatch::MethodNotAllowed(allow.join(", "))
        })
    }

    /// Finds the route for a normalized host, a path, a method and the request's headers.
    pub fn find(&self, host: &str, path: &str, method: &Method, headers: &http::HeaderMap) -> RouteMatch<'_> {
        if let Some(g) = self.exact.get(host) {
            if let Some(m) = self.in_group(g, path, method, headers) {
                return m;
            }
        }
        for (suffix, g) in &self.wildcard {
            // `*.example.com` covers exactly one more label.
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && !host[..host.len() - suffix.len()].contains('.')
            {
                if let Some(m) = self.in_group(g, path, method, headers) {
                    return m;
                }
            }
        }
        self.in_group(&self.any, path, method, headers)
            .unwrap_or(RouteMatch::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Example.COM:8443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert!(matches!(normalize_host("plain.example"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/", "/anything"));
        assert!(!prefix_matches("/api", "/"));
    }
}
