//! State shared by every worker: the drain flag and in-flight count the
//! shutdown sequence and readiness read, and the facts `/api/v1/info` shows.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;

use crate::backing::Probes;
use crate::config::Config;
use crate::platform::{InstanceFacts, Platform};
use crate::service::AppParts;

/// Whether the process is draining, and how many requests are in flight.
/// Cloned freely: every clone shares the same counters.
#[derive(Debug, Clone, Default)]
pub struct DrainState(Arc<DrainInner>);

#[derive(Debug, Default)]
struct DrainInner {
    draining: AtomicBool,
    /// One counter per worker (each touched by its own thread only, so
    /// counting a request bounces no cache line between cores); summed
    /// when someone asks.
    counters: Mutex<Vec<Arc<AtomicUsize>>>,
    /// Wakes long-lived connections (WebSockets) when the drain begins.
    started: tokio::sync::Notify,
}

impl DrainState {
    /// Marks the process as draining: `/readyz` answers 503 from now on and
    /// responses ask clients to close their connection. Returns false if a
    /// drain had already begun.
    pub fn begin(&self) -> bool {
        let first = !self.0.draining.swap(true, Ordering::SeqCst);
        if first {
            self.0.started.notify_waiters();
        }
        first
    }

    /// Resolves once the drain has begun (at once if it already has). Long
    /// connections select on it to close cleanly instead of being cut.
    pub async fn wait_draining(&self) {
        let notified = self.0.started.notified();
        tokio::pin!(notified);
        // Registered before the check, so a begin() in between is not lost.
        notified.as_mut().enable();
        if self.is_draining() {
            return;
        }
        notified.await;
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Requests in flight, over every worker.
    pub fn in_flight(&self) -> usize {
        self.counters()
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A counter for one worker's requests.
    pub fn counter(&self) -> InFlightCounter {
        let counter = Arc::new(AtomicUsize::new(0));
        self.counters().push(counter.clone());
        InFlightCounter(counter)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Vec<Arc<AtomicUsize>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.0.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One worker's in-flight count.
#[derive(Debug, Clone)]
pub struct InFlightCounter(Arc<AtomicUsize>);

impl InFlightCounter {
    /// Counts a request in; [`InFlightCounter::leave`] counts it out.
    pub fn enter(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request out.
    pub fn leave(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Facts about this process that do not change while it runs.
#[derive(Debug, Clone)]
pub struct ServiceFacts {
    /// The service's name.
    pub name: &'static str,
    /// The running version.
    pub version: &'static str,
    /// The platform detected at start.
    pub platform: Platform,
    /// What the platform says about this instance.
    pub instance: InstanceFacts,
    /// Every listener, as shown to operators (`[::]:5000`, `unix:/run/x`).
    pub listeners: Vec<String>,
    /// The bound TCP ports.
    pub ports: Vec<u16>,
    /// Worker threads serving requests.
    pub workers: usize,
    /// When the process started serving.
    pub started: Instant,
}

/// What the app and its middleware need to know, fixed at start.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// Peers whose forwarded headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    /// Whether plain-HTTP requests are redirected to HTTPS (`FORCE_HTTPS`).
    pub force_https: bool,
    /// Whether requests are counted for `/metrics` (`METRICS_PORT` is set).
    pub metrics: bool,
    /// The longest a request may take, body included (`REQUEST_TIMEOUT`).
    pub request_timeout: std::time::Duration,
    /// The largest body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Whether Swagger UI and the spec are served (`DOCS_ENABLED`).
    pub docs_enabled: bool,
    /// The origins CORS admits (`CORS_ALLOWED_ORIGINS`); none turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Whether the test-only routes are mounted (`PORTBOUND_TEST_ROUTES`).
    pub test_routes: bool,
}

/// Everything handlers share, behind one `web::Data`.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The drain flag and the in-flight count.
    pub drain: DrainState,
    /// The last results of the backing services and readiness checks.
    pub probes: Probes,
    /// Facts about this process.
    pub facts: Arc<ServiceFacts>,
    /// The settings the middleware and handlers read.
    pub settings: Arc<RequestSettings>,
    /// The service's routes and OpenAPI document.
    pub app: Arc<AppParts>,
    /// The concurrency limit on the service's routes.
    pub overload: Arc<crate::overload::Limiter>,
    /// The per-client rate limit (`RATE_LIMIT`), if one is set.
    pub rate_limit: Option<Arc<crate::overload::RateLimiter>>,
}

impl AppState {
    /// The state for `config`'s service, serving `listeners` on `ports`.
    pub fn new(
        config: &Config,
        listeners: Vec<String>,
        ports: Vec<u16>,
        app: Arc<AppParts>,
    ) -> AppState {
        AppState {
            drain: DrainState::default(),
            probes: Probes::new(&config.services, &app.checks),
            overload: Arc::new(crate::overload::Limiter::new(
                config.max_concurrent_requests,
                config.request_timeout,
            )),
            rate_limit: config
                .rate_limit
                .map(|r| Arc::new(crate::overload::RateLimiter::new(r))),
            settings: Arc::new(RequestSettings {
                trusted_proxies: config.trusted_proxies.clone(),
                force_https: config.force_https,
                metrics: config.metrics_port.is_some(),
                request_timeout: config.request_timeout,
                max_body_bytes: config.max_body_bytes,
                docs_enabled: config.docs_enabled,
                cors_allowed_origins: config.cors_allowed_origins.clone(),
                test_routes: config.test_routes,
            }),
            facts: Arc::new(ServiceFacts {
                name: app.name,
                version: app.version,
                platform: config.platform,
                instance: config.instance.clone(),
                listeners,
                ports,
                workers: config.workers,
                started: Instant::now(),
            }),
            app,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workers_requests_count_in_flight() {
        let drain = DrainState::default();
        let (w1, w2) = (drain.counter(), drain.counter());
        w1.enter();
        w2.enter();
        w2.enter();
        assert_eq!(drain.in_flight(), 3);
        w2.leave();
        assert_eq!(drain.in_flight(), 2);
        w1.leave();
        w2.leave();
        assert_eq!(drain.in_flight(), 0);
    }

    #[actix_rt::test]
    async fn waiters_wake_when_the_drain_begins() {
        let drain = DrainState::default();
        let waiter = actix_rt::spawn({
            let drain = drain.clone();
            async move { drain.wait_draining().await }
        });
        actix_rt::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.begin();
        waiter.await.unwrap();
        // and a waiter that comes after the fact returns at once
        drain.wait_draining().await;
    }

    #[test]
    fn a_drain_begins_once() {
        let drain = DrainState::default();
        assert!(!drain.is_draining());
        assert!(drain.begin());
        assert!(!drain.begin());
        assert!(drain.clone().is_draining());
    }
}
