//! Calls to the services the environment names (the `upstreams` feature):
//! `AUTH_SERVICE_URL=http://auth:5001` makes `auth` an upstream a handler
//! calls by name, the 12-factor article's picture of port-bound services
//! composing.
//!
//! ```no_run
//! use actix_web::HttpResponse;
//! use portbound::error::ApiError;
//! use portbound::upstream::Upstreams;
//!
//! async fn handler(upstreams: Upstreams) -> Result<HttpResponse, ApiError> {
//!     let reply = upstreams
//!         .get("auth")?
//!         .post("/api/v1/verify")
//!         .json(&serde_json::json!({"token": "t"}))
//!         .send()
//!         .await?;
//!     let who: serde_json::Value = reply.json()?;
//!     Ok(HttpResponse::Ok().json(who))
//! }
//! ```
//!
//! - **Propagation.** A call to a named upstream carries the inbound
//!   request's `X-Request-ID`, `traceparent` and `tracestate`, so one id
//!   runs through every service's access log. A call to any other origin
//!   ([`Upstreams::external`]) carries none of them: request context never
//!   leaves for a third party (Encore's rule).
//! - **Deadlines.** An attempt is bounded by the smaller of the upstream's
//!   `NAME_SERVICE_TIMEOUT` (10 s) and what is left of the inbound request's
//!   `REQUEST_TIMEOUT`: no caller waits past the point where its own client
//!   has given up, and nothing waits without a limit.
//! - **Retries** only where they are safe: an idempotent method (GET, HEAD,
//!   PUT, DELETE, OPTIONS) or a call with an `Idempotency-Key`, after a
//!   connection error, 408, 429, 502, 503 or 504; any call after a refused
//!   connection (nothing was sent). Exponential backoff from 100 ms with full
//!   jitter, or the upstream's `Retry-After` when it gives one and it fits
//!   the deadline. A retry budget (gRFC A6's token bucket) keeps retries
//!   under about a tenth of the load on a failing upstream.
//! - **A circuit breaker per upstream.** When half the calls in 30 s fail
//!   (at least 20), calls fail at once for 5 s with a 503 problem naming the
//!   upstream; then one call tests it, and a success closes it.
//! - **Errors** become problems naming the upstream, never its URL: 504 when
//!   the time ran out, 503 (with `Retry-After`) while the breaker is open,
//!   nothing listens or the upstream says so, 502 for anything else it did
//!   wrong. [`Reply::json`] passes an
//!   upstream's own 4xx problem on.
//! - **Metrics**: `upstream_requests_total{upstream,method,status}`,
//!   `upstream_request_duration_seconds{upstream}`,
//!   `upstream_retries_total{upstream}`, `upstream_circuit_open{upstream}`.
//!
//! **TLS.** An `https://` upstream is verified against the system's root
//! certificates, or those `SSL_CERT_FILE`/`SSL_CERT_DIR` name (rustls, TLS
//! 1.2 and 1.3, aws-lc-rs); a certificate that does not verify is a
//! connection error, never a call sent unverified.
//!
//! **Why one client per worker.** actix runs each worker on its own
//! single-threaded runtime, and a pooled connection belongs to the runtime
//! that opened it; awc's `Client` is not `Send` for that reason (actix-web
//! #1045). Each worker keeps its own client in a thread-local, and only the
//! limits, breakers and budgets, plain shared state, cross workers.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backing::{BackingService, BreakerLimits, UpstreamLimits};
use crate::error::ApiError;
use crate::telemetry::RequestInfo;
use crate::telemetry::request_id::X_REQUEST_ID;

/// The largest answer body read from an upstream: more is a 502, not a
/// worker's memory.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// The first retry's backoff ceiling; each retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest backoff between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Kept back from the inbound deadline, so the caller still has time to
/// answer its own client after the last attempt.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

thread_local! {
    /// This worker's clients (see the module's note on runtimes): one for
    /// `http://`, and one with TLS, made on the first `https://` call, so a
    /// service that calls none never reads a root certificate.
    static CLIENT: OnceCell<awc::Client> = const { OnceCell::new() };
    static TLS_CLIENT: OnceCell<awc::Client> = const { OnceCell::new() };
}

fn client(url: &url::Url) -> awc::Client {
    let builder = || {
        awc::Client::builder()
            // The call's own deadline bounds every attempt instead.
            .disable_timeout()
            .add_default_header((header::USER_AGENT, crate::RUNTIME))
    };
    if url.scheme() != "https" {
        return CLIENT.with(|c| c.get_or_init(|| builder().finish()).clone());
    }
    TLS_CLIENT.with(|c| {
        c.get_or_init(|| match tls() {
            Some(tls) => builder()
                .connector(awc::Connector::new().rustls_0_23(tls))
                .finish(),
            None => builder().finish(),
        })
        .clone()
    })
}

/// TLS for `https://` upstreams, built once per process: TLS 1.2 and 1.3
/// on aws-lc-rs (rustls's default provider), the system's root certificates (`SSL_CERT_FILE`
/// or `SSL_CERT_DIR` name others, as for OpenSSL: how a private CA is
/// trusted; they replace the system's, so a bundle must hold both to trust
/// both), and ALPN offering HTTP/2 then HTTP/1.1, as awc's own default.
/// `None` (logged once) if no provider can be set up: an `https://` call
/// then fails as a connection error, naming the upstream.
fn tls() -> Option<Arc<rustls::ClientConfig>> {
    static TLS: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            log::warn!("upstreams: a root certificate could not be read: {error}");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            log::warn!(
                "upstreams: no root certificate found (set SSL_CERT_FILE): https:// \
                 upstreams will fail their TLS handshake"
            );
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => {
                let mut config = builder.with_root_certificates(roots).with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
            Err(e) => {
                log::error!("upstreams: TLS cannot be set up: {e}");
                None
            }
        }
    })
    .clone()
}

/// The readiness probe of an `https://` upstream: the GET of its health
/// path that an `http://` one gets (`backing`), over TLS verified as its
/// calls are (the same roots, `SSL_CERT_FILE` included), offering HTTP/1.1
/// only. A certificate that does not verify is down, as its calls would
/// fail. `None` for any other service. Blocking: it runs on the probes'
/// own thread, under one deadline (`backing::Deadline`).
pub fn https_probe(service: &BackingService) -> Option<crate::backing::ProbeFn> {
    let url = service.url();
    let path = service.health_path()?.to_owned();
    if url.scheme() != "https" {
        return None;
    }
    let host = url.host_str()?.trim_matches(['[', ']']).to_owned();
    // Built once: the name the certificate must carry, and the calls' TLS
    // offering HTTP/1.1 only.
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"));
    let config = tls().map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    });
    let service = service.clone();
    Some(Arc::new(move |timeout: Duration| {
        let config = config.clone().ok_or("TLS cannot be set up")?;
        let mut tls = rustls::ClientConnection::new(config, name.clone()?)
            .map_err(|e| format!("TLS: {e}"))?;
        // One deadline for the whole probe: the connect, the handshake's
        // reads and writes, and the GET.
        let until = Instant::now() + timeout;
        let (mut tcp, _) = service.connect(until)?;
        let start = Instant::now();
        let mut socket = crate::backing::Deadline::new(&mut tcp, until);
        let mut stream = rustls::Stream::new(&mut tls, &mut socket);
        service.get_health(&mut stream, &path, start)
    }))
}

/// Every upstream of the process, built once from the configuration and
/// shared by the workers.
#[derive(Debug, Default)]
pub struct Registry {
    upstreams: BTreeMap<String, Arc<Entry>>,
}

impl Registry {
    /// The `*_SERVICE_URL` upstreams among `services`.
    pub fn new(services: &[BackingService]) -> Registry {
        let upstreams = services
            .iter()
            .filter(|s| s.variable.ends_with(crate::backing::SUFFIX))
            .filter(|s| matches!(s.url().scheme(), "http" | "https"))
            .map(|s| {
                let entry = Entry {
                    name: s.name.clone(),
                    base: s.url().clone(),
                    limits: s.limits,
                    breaker: Mutex::new(Breaker::default()),
                    budget: Mutex::new(Budget::new()),
                };
                metrics::gauge!("upstream_circuit_open", "upstream" => s.name.clone()).set(0.0);
                (s.name.clone(), Arc::new(entry))
            })
            .collect::<BTreeMap<_, _>>();
        // The root certificates are read here, once, at start, rather than
        // on a worker at the first https:// call.
        if upstreams.values().any(|e| e.base.scheme() == "https") {
            let _ = tls();
        }
        Registry { upstreams }
    }
}

/// One upstream: where it is, its limits, and its shared state.
struct Entry {
    name: String,
    base: url::Url,
    limits: UpstreamLimits,
    breaker: Mutex<Breaker>,
    budget: Mutex<Budget>,
}

impl std::fmt::Debug for Entry {
    /// Without the URL, which may hold a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A circuit breaker's state.
#[derive(Debug, Default)]
struct Breaker {
    window_start: Option<Instant>,
    calls: u32,
    failures: u32,
    /// Open until then.
    open_until: Option<Instant>,
    /// Half-open: the one call let through to test the upstream.
    probing: bool,
}

impl Breaker {
    /// Whether a call may go now; `Err` is how long it stays open.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            Some(until) if now < until => Err(until - now),
            Some(_) if self.probing => Err(Duration::from_secs(1)),
            Some(_) => {
                self.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a call's outcome; returns whether the breaker changed
    /// (true: it opened; false: it closed; None: no change).
    fn record(&mut self, limits: &BreakerLimits, ok: bool, now: Instant) -> Option<bool> {
        if self.open_until.is_some() {
            // The test call's outcome decides.
            self.probing = false;
            if ok {
                *self = Breaker::default();
                return Some(false);
            }
            self.open_until = Some(now + limits.open_for);
            return None;
        }
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) > limits.window {
            self.window_start = Some(now);
            self.calls = 0;
            self.failures = 0;
        }
        self.calls += 1;
        self.failures += u32::from(!ok);
        let ratio = f64::from(self.failures) / f64::from(self.calls);
        if self.calls >= limits.min_calls && ratio >= limits.failure_ratio {
            self.open_until = Some(now + limits.open_for);
            return Some(true);
        }
        None
    }
}

/// gRFC A6's retry throttling: tokens start at the maximum, a failed call
/// takes one, a successful one gives back `ratio`; retrying is allowed only
/// while more than half are left.
#[derive(Debug)]
struct Budget {
    tokens: f64,
}

const BUDGET_TOKENS: f64 = 10.0;

impl Budget {
    fn new() -> Budget {
        Budget {
            tokens: BUDGET_TOKENS,
        }
    }

    fn record(&mut self, ok: bool, ratio: f64) {
        self.tokens = if ok {
            (self.tokens + ratio).min(BUDGET_TOKENS)
        } else {
            (self.tokens - 1.0).max(0.0)
        };
    }

    fn allows_retry(&self) -> bool {
        self.tokens > BUDGET_TOKENS / 2.0
    }
}

/// What a call takes from the request that makes it.
#[derive(Debug, Clone)]
struct Context {
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    /// When the inbound request's budget runs out.
    deadline: Option<Instant>,
    /// The request's span, the parent of each call's (the `otel` feature).
    #[cfg(feature = "otel")]
    span: Option<opentelemetry::Context>,
}

/// The upstreams, as a handler reaches them: an extractor that also
/// carries the inbound request's id, trace context and deadline.
pub struct Upstreams {
    registry: Option<web::Data<Registry>>,
    context: Context,
}

impl FromRequest for Upstreams {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Upstreams, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Upstreams::for_request(req)))
    }
}

impl Upstreams {
    /// The upstreams, with `req`'s context.
    pub fn for_request(req: &HttpRequest) -> Upstreams {
        let timeout = req
            .app_data::<web::Data<crate::state::AppState>>()
            .map(|s| s.settings.request_timeout)
            .filter(|t| !t.is_zero());
        let info = req.extensions().get::<RequestInfo>().cloned();
        let request_id = info
            .as_ref()
            .map(|i| i.id.header().clone())
            .or_else(|| req.headers().get(X_REQUEST_ID).cloned());
        let start = info.as_ref().map_or_else(Instant::now, |i| i.start);
        Upstreams {
            registry: req.app_data::<web::Data<Registry>>().cloned(),
            context: Context {
                request_id,
                traceparent: req.headers().get(TRACEPARENT).cloned(),
                tracestate: req.headers().get(TRACESTATE).cloned(),
                deadline: timeout.map(|t| start + t),
                #[cfg(feature = "otel")]
                span: req
                    .extensions()
                    .get::<crate::telemetry::otel::ServerSpan>()
                    .map(|s| s.cx.clone()),
            },
        }
    }

    /// The upstream `name` (`auth` for `AUTH_SERVICE_URL`). An unknown
    /// name is the service's own mistake: a 500, logged with the variable
    /// to set.
    pub fn get(&self, name: &str) -> Result<Upstream<'_>, ApiError> {
        let entry = self
            .registry
            .as_ref()
            .and_then(|r| r.upstreams.get(name))
            .ok_or_else(|| {
                log::error!(
                    "no upstream {name}: set {}_SERVICE_URL to an http(s) URL",
                    name.to_ascii_uppercase()
                );
                ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR)
            })?;
        Ok(Upstream {
            entry: entry.clone(),
            context: &self.context,
        })
    }

    /// Whether `name` is configured: a service may run without an optional
    /// upstream.
    pub fn has(&self, name: &str) -> bool {
        self.registry
            .as_ref()
            .is_some_and(|r| r.upstreams.contains_key(name))
    }

    /// A call to an origin the environment does not name (a third party):
    /// the same deadline, none of the request's id or trace headers, no
    /// breaker and no retries unless asked.
    pub fn external(&self, method: Method, url: url::Url) -> Call {
        let limits = UpstreamLimits {
            retries: 0,
            breaker: None,
            ..UpstreamLimits::default()
        };
        let entry = Arc::new(Entry {
            name: url.host_str().unwrap_or("external").to_owned(),
            base: url.clone(),
            limits,
            breaker: Mutex::new(Breaker::default()),
            budget: Mutex::new(Budget::new()),
        });
        Call::new(
            entry,
            Context {
                request_id: None,
                traceparent: None,
                tracestate: None,
                deadline: self.context.deadline,
                #[cfg(feature = "otel")]
                span: None,
            },
            method,
            url,
        )
    }
}

/// One named upstream, for one request.
pub struct Upstream<'a> {
    entry: Arc<Entry>,
    context: &'a Context,
}

impl Upstream<'_> {
    /// A call of `method` to `path` (absolute, below the upstream's URL).
    pub fn request(&self, method: Method, path: &str) -> Call {
        let mut url = self.entry.base.clone();
        // Below the base URL's own path; a path may not leave the upstream.
        let base = url.path().trim_end_matches('/').to_owned();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        url.set_query((!query.is_empty()).then_some(query));
        url.set_fragment(None);
        Call::new(self.entry.clone(), self.context.clone(), method, url)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Call {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> Call {
        self.request(Method::POST, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> Call {
        self.request(Method::PUT, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Call {
        self.request(Method::DELETE, path)
    }
}

/// A call being built.
pub struct Call {
    entry: Arc<Entry>,
    context: Context,
    method: Method,
    url: url::Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timeout: Option<Duration>,
    retries: Option<u32>,
    safe: bool,
}

impl Call {
    fn new(entry: Arc<Entry>, context: Context, method: Method, url: url::Url) -> Call {
        Call {
            entry,
            context,
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: None,
            retries: None,
            safe: false,
        }
    }

    /// Marks a call as safe to send twice whatever its method (a `POST`
    /// that only reads, such as a token check), so it is retried like a
    /// `GET`.
    pub fn safe_to_retry(mut self) -> Call {
        self.safe = true;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Call {
        self.headers.push((name, value));
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json<T: Serialize>(mut self, value: &T) -> Call {
        // Serializing a value the service built does not fail for the
        // types a handler sends; an empty body would, visibly, upstream.
        self.body = serde_json::to_vec(value)
            .map(Bytes::from)
            .unwrap_or_default();
        self.headers.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        self
    }

    /// An `Idempotency-Key`: the upstream applies the call once however
    /// often it arrives, so it may be retried whatever its method.
    pub fn idempotency_key(self, key: HeaderValue) -> Call {
        self.header(IDEMPOTENCY_KEY, key)
    }

    /// A shorter limit for each attempt than the upstream's.
    pub fn timeout(mut self, limit: Duration) -> Call {
        self.timeout = Some(limit);
        self
    }

    /// Fewer (or more, up to 5) retries than the upstream's.
    pub fn retries(mut self, retries: u32) -> Call {
        self.retries = Some(retries.min(5));
        self
    }

    /// Whether a failed attempt may be sent again.
    fn idempotent(&self) -> bool {
        self.safe
            || matches!(
                self.method,
                Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
            )
            || self.headers.iter().any(|(n, _)| *n == IDEMPOTENCY_KEY)
    }

    /// Sends the call, retrying what is safe to retry, within the deadline.
    /// Any HTTP answer the upstream gives (after the retries) is `Ok`; a
    /// call that got none is a problem naming the upstream.
    pub async fn send(self) -> Result<Reply, ApiError> {
        let entry = self.entry.clone();
        let name = entry.name.as_str();
        let retries = self.retries.unwrap_or(entry.limits.retries);
        let per_attempt = self
            .timeout
            .map_or(entry.limits.timeout, |t| t.min(entry.limits.timeout));
        let idempotent = self.idempotent();
        let method = self.method.as_str().to_owned();
        let mut attempt = 0;
        loop {
            let now = Instant::now();
            if let Some(limits) = &entry.limits.breaker
                && let Err(open_for) = lock(&entry.breaker).admit(now)
            {
                let _ = limits;
                count(name, &method, "circuit_open");
                return Err(ApiError::unavailable(
                    format!("the {name} service is unavailable; retry shortly"),
                    open_for.as_secs().max(1) as u32,
                ));
            }
            let left = self.context.deadline.map(|d| {
                d.saturating_duration_since(now)
                    .saturating_sub(ANSWER_MARGIN)
            });
            let limit = left.map_or(per_attempt, |l| l.min(per_attempt));
            if limit.is_zero() {
                count(name, &method, "deadline");
                return Err(timed_out(name));
            }
            #[cfg(feature = "otel")]
            let span = self.client_span(attempt);
            let outcome = self
                .attempt(limit, {
                    #[cfg(feature = "otel")]
                    {
                        span.as_ref().map(|(_, headers)| headers.as_slice())
                    }
                    #[cfg(not(feature = "otel"))]
                    {
                        None
                    }
                })
                .await;
            #[cfg(feature = "otel")]
            if let Some((cx, _)) = &span {
                let (status, error) = match &outcome {
                    Ok(reply) => (Some(reply.status.as_u16()), None),
                    Err(Failure::Refused) => (None, Some("connection_refused")),
                    Err(Failure::TimedOut) => (None, Some("timeout")),
                    Err(Failure::Broken(_)) => (None, Some("invalid_response")),
                };
                crate::telemetry::otel::end_client_span(cx, status, error);
            }
            let took = now.elapsed().as_secs_f64();
            metrics::histogram!("upstream_request_duration_seconds", "upstream" => name.to_owned())
                .record(took);
            let (ok, retryable, retry_after) = match &outcome {
                Ok(reply) => {
                    count(name, &method, reply.status.as_str());
                    let transient = matches!(reply.status.as_u16(), 408 | 429 | 502 | 503 | 504);
                    (!transient, transient && idempotent, reply.retry_after())
                }
                Err(Failure::Refused) => {
                    count(name, &method, "refused");
                    (false, true, None)
                }
                Err(Failure::Broken(_)) => {
                    count(name, &method, "error");
                    (false, idempotent, None)
                }
                Err(Failure::TimedOut) => {
                    count(name, &method, "timeout");
                    (false, idempotent, None)
                }
            };
            self.record(ok);
            let budget_ok = lock(&entry.budget).allows_retry();
            if !ok && retryable && attempt < retries && budget_ok {
                let wait = backoff(attempt, retry_after);
                let fits = self
                    .context
                    .deadline
                    .is_none_or(|d| Instant::now() + wait + ANSWER_MARGIN < d);
                if fits {
                    attempt += 1;
                    metrics::counter!("upstream_retries_total", "upstream" => name.to_owned())
                        .increment(1);
                    actix_rt::time::sleep(wait).await;
                    continue;
                }
            }
            return match outcome {
                Ok(reply) => Ok(reply),
                Err(Failure::TimedOut) => Err(timed_out(name)),
                // Nothing listens: down, or restarting. Retry shortly.
                Err(Failure::Refused) => Err(ApiError::unavailable(
                    format!("the {name} service is unavailable; retry shortly"),
                    1,
                )),
                Err(Failure::Broken(why)) => {
                    log::warn!("upstream {name}: {why}");
                    Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the {name} service gave no valid answer"),
                    ))
                }
            };
        }
    }

    /// Records an outcome in the breaker and the budget.
    fn record(&self, ok: bool) {
        let entry = &self.entry;
        lock(&entry.budget).record(ok, entry.limits.retry_budget);
        if let Some(limits) = &entry.limits.breaker {
            let changed = lock(&entry.breaker).record(limits, ok, Instant::now());
            let gauge = metrics::gauge!("upstream_circuit_open", "upstream" => entry.name.clone());
            match changed {
                Some(true) => {
                    gauge.set(1.0);
                    log::warn!(
                        "upstream {}: circuit open for {} s after repeated failures",
                        entry.name,
                        limits.open_for.as_secs_f64()
                    );
                }
                Some(false) => {
                    gauge.set(0.0);
                    log::info!("upstream {}: circuit closed", entry.name);
                }
                None => {}
            }
        }
    }

    /// The span of attempt `resend` (0 for the first), a child of the
    /// request's, and the trace headers that carry it upstream.
    #[cfg(feature = "otel")]
    fn client_span(
        &self,
        resend: u32,
    ) -> Option<(opentelemetry::Context, Vec<(HeaderName, HeaderValue)>)> {
        use opentelemetry::KeyValue;
        let parent = self.context.span.as_ref()?;
        let url = &self.url;
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.as_str().to_owned()),
            KeyValue::new(
                "server.address",
                url.host_str().unwrap_or_default().to_owned(),
            ),
            KeyValue::new("peer.service", self.entry.name.clone()),
            // Scheme, host, port and path: never the userinfo or the query,
            // where credentials live.
            KeyValue::new(
                "url.full",
                format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or_default(),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                ) + url.path(),
            ),
        ];
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        if resend > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        crate::telemetry::otel::client_span(parent, self.method.as_str().to_owned(), attributes)
    }

    /// One attempt, within `limit`; `trace` replaces the request's own
    /// trace headers with the attempt's span.
    async fn attempt(
        &self,
        limit: Duration,
        trace: Option<&[(HeaderName, HeaderValue)]>,
    ) -> Result<Reply, Failure> {
        let mut request = client(&self.url)
            .request(self.method.clone(), self.url.as_str())
            .timeout(limit);
        if let Some(value) = &self.context.request_id {
            request = request.insert_header((X_REQUEST_ID, value.clone()));
        }
        match trace {
            Some(headers) => {
                for (name, value) in headers {
                    request = request.insert_header((name.clone(), value.clone()));
                }
            }
            None => {
                for (name, value) in [
                    (TRACEPARENT, &self.context.traceparent),
                    (TRACESTATE, &self.context.tracestate),
                ] {
                    if let Some(value) = value {
                        request = request.insert_header((name, value.clone()));
                    }
                }
            }
        }
        for (name, value) in &self.headers {
            request = request.insert_header((name.clone(), value.clone()));
        }
        let work = async {
            let mut response = request
                .send_body(self.body.clone())
                .await
                .map_err(|e| match e {
                    awc::error::SendRequestError::Connect(
                        awc::error::ConnectError::Io(_) | awc::error::ConnectError::Resolver(_),
                    ) => Failure::Refused,
                    awc::error::SendRequestError::Timeout => Failure::TimedOut,
                    other => Failure::Broken(other.to_string()),
                })?;
            let body = response
                .body()
                .limit(MAX_REPLY_BYTES)
                .await
                .map_err(|e| Failure::Broken(e.to_string()))?;
            Ok(Reply {
                upstream: self.entry.name.clone(),
                status: response.status(),
                headers: response.headers().clone(),
                body,
            })
        };
        // The whole attempt, body included, within the limit.
        actix_rt::time::timeout(limit, work)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }
}

/// Why an attempt got no answer.
enum Failure {
    /// No connection (refused, unresolvable): nothing was sent.
    Refused,
    /// The limit ran out.
    TimedOut,
    /// Anything else; the text is for the log only.
    Broken(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn count(upstream: &str, method: &str, status: &str) {
    metrics::counter!(
        "upstream_requests_total",
        "upstream" => upstream.to_owned(),
        "method" => method.to_owned(),
        "status" => status.to_owned()
    )
    .increment(1);
}

fn timed_out(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!("the {name} service did not answer in time"),
    )
}

/// The wait before retry `attempt` (0 for the first): the upstream's
/// `Retry-After` when it gave one (up to the longest backoff), else
/// exponential from 100 ms with full jitter (AWS Architecture Blog,
/// "Exponential Backoff And Jitter", 2015).
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(BACKOFF_MAX);
    }
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_MAX);
    ceiling.mul_f64(fastrand::f64())
}

/// An upstream's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    upstream: String,
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body (at most 4 MiB).
    pub body: Bytes,
}

impl Reply {
    /// `Retry-After` in seconds, if given as a number.
    fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }

    /// A 2xx answer's JSON body. Otherwise the problem to answer with: an
    /// upstream's own 4xx problem document is passed on (its status and
    /// body: the caller's request was at fault the same way); 503 stays 503
    /// with its `Retry-After`; any other status, or a body that is not the
    /// JSON expected, is a 502 naming the upstream.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let name = &self.upstream;
        if self.status.is_success() {
            return serde_json::from_slice(&self.body).map_err(|e| {
                log::warn!("upstream {name}: an answer that is not the JSON expected: {e}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the {name} service gave an answer that could not be read"),
                )
            });
        }
        Err(self.problem())
    }

    /// The problem this answer becomes for the caller's client (see
    /// [`Reply::json`]).
    pub fn problem(&self) -> ApiError {
        let name = &self.upstream;
        let is_problem = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/problem+json"));
        let status = self.status;
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS && is_problem {
            let detail = serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("the {name} service refused the request"));
            return ApiError::new(status, detail);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            let wait = self.retry_after().map_or(1, |d| d.as_secs().max(1) as u32);
            return ApiError::unavailable(
                format!("the {name} service is unavailable; retry shortly"),
                wait,
            );
        }
        if status == StatusCode::GATEWAY_TIMEOUT {
            return timed_out(name);
        }
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the {name} service answered {}", status.as_u16()),
        )
    }
}

/// Describes the upstream metrics, for `/metrics`' `# HELP` lines.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "upstream_requests_total",
        "Calls to upstreams, by upstream, method and outcome (a status code, refused, error, \
         timeout, deadline or circuit_open)"
    );
    metrics::describe_histogram!(
        "upstream_request_duration_seconds",
        metrics::Unit::Seconds,
        "How long each attempt took, by upstream"
    );
    metrics::describe_counter!(
        "upstream_retries_total",
        "Retries sent to upstreams, by upstream"
    );
    metrics::describe_gauge!(
        "upstream_circuit_open",
        "1 while an upstream's circuit breaker is open, by upstream"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_at_the_ratio_then_tests_with_one_call() {
        let limits = BreakerLimits {
            failure_ratio: 0.5,
            min_calls: 4,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(5),
        };
        let mut b = Breaker::default();
        let t0 = Instant::now();
        assert_eq!(b.record(&limits, true, t0), None);
        assert_eq!(b.record(&limits, false, t0), None);
        // 2 of 3 failed, but fewer than 4 calls: still closed.
        assert_eq!(b.record(&limits, false, t0), None);
        // 2 of 4 failed: open.
        assert_eq!(b.record(&limits, true, t0), Some(true));
        // 1 of 4: closed.
        let mut b = Breaker::default();
        for ok in [true, true, false] {
            assert_eq!(b.record(&limits, ok, t0), None);
        }
        assert_eq!(b.record(&limits, true, t0), None);
        // A new window forgets the old calls.
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(&limits, false, t0);
        }
        assert_eq!(b.record(&limits, false, t0 + Duration::from_secs(31)), None);
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(&limits, false, t0);
        }
        assert_eq!(b.record(&limits, false, t0), Some(true));
        assert!(b.admit(t0 + Duration::from_secs(1)).is_err());
        // After 5 s one call goes; the next waits for its outcome.
        let later = t0 + Duration::from_secs(6);
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_err());
        assert_eq!(b.record(&limits, true, later), Some(false));
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn the_budget_stops_retries_after_repeated_failures_and_refills() {
        let mut budget = Budget::new();
        for _ in 0..5 {
            assert!(budget.allows_retry());
            budget.record(false, 0.1);
        }
        assert!(!budget.allows_retry());
        for _ in 0..11 {
            budget.record(true, 0.1);
        }
        assert!(budget.allows_retry());
    }

    #[test]
    fn backoff_grows_is_jittered_and_honours_retry_after() {
        for attempt in 0..8 {
            let wait = backoff(attempt, None);
            let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt).min(BACKOFF_MAX);
            assert!(wait <= ceiling, "{attempt}: {wait:?}");
        }
        assert_eq!(
            backoff(0, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(backoff(0, Some(Duration::from_secs(60))), BACKOFF_MAX);
    }
}
