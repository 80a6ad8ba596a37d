//! Overload: a concurrency limit on the service's routes, so that when
//! requests arrive faster than they can finish the excess is refused at
//! once, cheaply, instead of every request waiting together until the
//! router gives up (the Google SRE book, "Handling Overload").
//!
//! - **The limit.** At most `limit` requests run at once. A request over it
//!   waits up to [`QUEUE_WAIT`] in a queue no longer than the limit, and is
//!   then admitted or answered `503` problem+json with `Retry-After: 1`: a
//!   refusal costs an atomic operation and a small response, never a
//!   handler's work. A client that leaves while queued leaves the queue (its
//!   request's future is dropped).
//! - **Adaptive by default**, in the family of Netflix's concurrency-limits
//!   (Gradient2, Vegas): every 250 ms the mean time of the requests that
//!   finished is compared with the best mean seen (which may rise by 0.5 %
//!   a window, about 2x a minute, as the service changes). While it stays
//!   within 1.5 times that, or under [`LATENCY_FLOOR`], and the limit is in
//!   use, the limit grows: by its square root, or doubles when requests
//!   reached it (as TCP's slow start). Past both, requests are queueing inside, and the limit
//!   drops to what the measured throughput needs at the unloaded time
//!   (Little's law), at most halving a window. It starts at
//!   [`INITIAL_LIMIT`] and stays between [`MIN_LIMIT`] and [`MAX_LIMIT`], so
//!   it needs no tuning on one CPU or two. `MAX_CONCURRENT_REQUESTS=N`
//!   fixes it instead, for a service whose capacity is known (a pool of N
//!   database connections).
//! - **Timed by sampling.** A busy instance times one request in every
//!   2, 4 or 8 (as many as keep [`SAMPLES_PER_WINDOW`] a window), a quiet
//!   one every request (from the first timed request a second past a
//!   window's end that lacks samples): the mean of a sample is the mean,
//!   and a request that is not timed costs two atomic operations and no
//!   clock read. The most requests running at once is noted on every
//!   release. A fixed limit times nothing.
//! - **A body is read first.** A request with a body that fits
//!   `MAX_BODY_BYTES` is read whole before it takes a slot, so a client
//!   that uploads slowly holds memory it is allowed, not capacity every
//!   other client needs (a chunked body of unknown length, or one whose
//!   client waits for `100 Continue`, is read by the handler, under the
//!   limit).
//! - **The probes are never limited.** `/healthz` and `/readyz` (and the
//!   metrics listener, a separate app) bypass it, so a busy instance is not
//!   restarted for being busy. Readiness does not turn 503 under load: when
//!   every instance is overloaded, taking them all out of rotation would
//!   turn slow answers into none.
//! - **No work for clients that have left.** A request whose router says
//!   it queued longer than the request's whole budget (`REQUEST_TIMEOUT`)
//!   is answered 503 without running: Heroku's router stamps
//!   `X-Request-Start` (milliseconds since the epoch: "Heroku Headers" in
//!   <https://devcenter.heroku.com/articles/http-routing>) and gives up after
//!   30 s (H12), nginx can stamp it as `t=${msec}`. It is read only from a
//!   trusted proxy (`TRUSTED_PROXIES`), never from a client.
//! - **A rate limit per client** (`RATE_LIMIT`, off by default): see
//!   [`RateLimiter`].
//! - **Visible.** `overload_limit`, `overload_queued`,
//!   `overload_shed_total{reason}` and the queue time
//!   (`http_request_queue_seconds`) on the metrics listener; one `warn`
//!   line when shedding starts and one when it stops, never one a request.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::Error;
use actix_web::HttpMessage;
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};

use crate::error::ApiError;
use crate::telemetry::RequestInfo;

/// How long a request may wait for a slot: long enough for one to free up
/// under a steady load, short enough that a refused client retries
/// elsewhere quickly.
pub const QUEUE_WAIT: Duration = Duration::from_millis(100);
/// The adaptive limit's start: above what the platforms send one instance
/// by default (Cloud Run's `containerConcurrency` 80, fly.toml's
/// `hard_limit` 100), so a new instance never refuses the traffic its
/// platform means for it; it shrinks within a second once that is too much.
pub const INITIAL_LIMIT: usize = 100;
/// The adaptive limit's floor: below it one slow request starves the rest.
pub const MIN_LIMIT: usize = 4;
/// The adaptive limit's ceiling for one process.
pub const MAX_LIMIT: usize = 1000;
/// One measurement window.
const WINDOW: Duration = Duration::from_millis(250);
/// How much the baseline may rise a window.
const BASELINE_RISE: f64 = 1.005;
/// How much slower than the baseline still counts as unloaded.
const TOLERANCE: f64 = 1.5;
/// A mean time in the service under which the limit never shrinks, however
/// far above the baseline it is. A service whose requests wait for a pool
/// of 10 database connections takes 10x its unloaded time under 100
/// clients, and is doing its best work: shedding there refuses requests it
/// would have answered in milliseconds, while no router is anywhere near
/// giving up (Heroku's 30 s, nginx's 60 s). Queues that threaten them are
/// seconds long, far above this.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(250);
/// The samples a window aims for: enough for its mean to hold, few enough
/// that a busy instance reads the clock for one request in
/// [`MAX_SAMPLE_EVERY`].
pub const SAMPLES_PER_WINDOW: u32 = 16;
/// The sparsest sampling: one request in this many is timed.
pub const MAX_SAMPLE_EVERY: u32 = 8;
/// How long past its end a window with too few samples for a mean waits
/// before every request is timed until it has them.
const STALE: Duration = Duration::from_secs(1);
/// Quiet time after the last refusal before shedding counts as stopped.
const QUIET: Duration = Duration::from_secs(2);
/// Seconds a refused client is told to wait.
const RETRY_AFTER: u32 = 1;
/// A prepared name: looking a header up by `&str` builds a `HeaderName`
/// first, and for a name the `http` crate does not know that allocates.
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");

/// Why a request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// At the limit, and the queue was full or the wait ran out.
    Limit,
    /// The router had already held it longer than its budget.
    QueueTime,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Limit => "limit",
            Reason::QueueTime => "queue_time",
        }
    }
}

/// The limit and its state, shared by every worker.
#[derive(Debug)]
pub struct Limiter {
    fixed: bool,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    notify: tokio::sync::Notify,
    gradient: Mutex<Gradient>,
    /// The most requests running at a release this window.
    busiest: AtomicUsize,
    /// One request in this many is timed (a power of two; see
    /// [`SAMPLES_PER_WINDOW`]).
    sample_every: AtomicU32,
    shed: [AtomicU64; 2],
    shedding: AtomicBool,
    /// Milliseconds after `born` of the last refusal.
    last_shed: AtomicU64,
    born: Instant,
    /// A request queued at the router longer than this is not run.
    budget: Duration,
}

/// The adaptive limit's measurements.
#[derive(Debug)]
struct Gradient {
    limit: f64,
    window_start: Instant,
    /// `window_start` + [`WINDOW`]: compared, not subtracted, per request.
    window_end: Instant,
    sum: Duration,
    /// Requests timed this window.
    count: u32,
    /// Requests finished this window, estimated: each timed one stands for
    /// the `sample_every` in force when it started.
    finished: u32,
    /// Seconds: the best recent window mean.
    baseline: f64,
}

impl Limiter {
    /// A limiter: fixed at `fixed` requests, or adaptive when `None`.
    /// `budget` is the request's whole time (`REQUEST_TIMEOUT`).
    pub fn new(fixed: Option<usize>, budget: Duration) -> Limiter {
        let start = fixed.unwrap_or(INITIAL_LIMIT);
        Limiter {
            fixed: fixed.is_some(),
            limit: AtomicUsize::new(start),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
            gradient: Mutex::new(Gradient {
                limit: start as f64,
                window_start: Instant::now(),
                window_end: Instant::now() + WINDOW,
                sum: Duration::ZERO,
                count: 0,
                finished: 0,
                baseline: f64::INFINITY,
            }),
            busiest: AtomicUsize::new(0),
            sample_every: AtomicU32::new(1),
            shed: [AtomicU64::new(0), AtomicU64::new(0)],
            shedding: AtomicBool::new(false),
            last_shed: AtomicU64::new(0),
            born: Instant::now(),
            budget,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests running under the limit now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests refused since start, for `reason`.
    pub fn shed(&self, reason: Reason) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// Takes a slot if one is free.
    fn try_acquire(&self) -> bool {
        let limit = self.limit();
        // SeqCst: see `release` (free on x86, where loads are plain and a
        // compare-exchange is a locked instruction either way).
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current >= limit {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Waits up to [`QUEUE_WAIT`] for a slot, in a queue no longer than the
    /// limit. Dropping the future leaves the queue.
    async fn acquire_queued(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.limit() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _leave = Leave(&self.queued);
        let deadline = Instant::now() + QUEUE_WAIT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_acquire() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || actix_rt::time::timeout(left, notified).await.is_err() {
                return self.try_acquire();
            }
        }
    }

    /// Whether the request a worker admits next is timed: its weight (the
    /// requests it stands for), or `None`. `tick` is the worker's own count.
    fn timing(&self, tick: &std::cell::Cell<u32>) -> Option<u32> {
        if self.fixed {
            return None;
        }
        let every = self.sample_every.load(Ordering::Relaxed);
        let n = tick.get().wrapping_add(1);
        tick.set(n);
        (n & (every - 1) == 0).then_some(every)
    }

    /// Gives a slot back; `timed` is when a timed request started, and
    /// its weight.
    fn release(&self, timed: Option<(Instant, u32)>) {
        // SeqCst, with `acquire_queued`'s: either it sees the slot, or this
        // sees it queued and wakes it. Without waiters, no wake-up at all.
        let running = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
        if let Some((start, weight)) = timed {
            // The one clock read of a timed release: the sample and the
            // window use it.
            let now = Instant::now();
            self.sample(now, now.saturating_duration_since(start), running, weight);
        } else if !self.fixed {
            self.note_running(running);
        }
        if self.shedding.load(Ordering::Relaxed) {
            let quiet = self
                .now_ms()
                .saturating_sub(self.last_shed.load(Ordering::Relaxed));
            if quiet >= QUIET.as_millis() as u64 && self.shedding.swap(false, Ordering::AcqRel) {
                log::warn!(
                    "overload: stopped shedding ({} refused in all); limit {}",
                    self.shed(Reason::Limit) + self.shed(Reason::QueueTime),
                    self.limit()
                );
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Records a refusal: the first of a spell is logged, once.
    fn refuse(&self, reason: Reason) -> ApiError {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.last_shed.store(self.now_ms(), Ordering::Relaxed);
        metrics::counter!("overload_shed_total", "reason" => reason.label()).increment(1);
        if !self.shedding.swap(true, Ordering::AcqRel) {
            log::warn!(
                "overload: shedding load ({}): limit {}, {} running, {} queued",
                reason.label(),
                self.limit(),
                self.in_flight(),
                self.queued()
            );
        }
        let detail = match reason {
            Reason::Limit => "the service is at capacity; retry shortly",
            Reason::QueueTime => "the request waited too long before it reached the service",
        };
        ApiError::unavailable(detail, RETRY_AFTER)
    }

    /// The most requests running at a release this window: noted on every
    /// release (a load and a compare; a write only when it rises), so a
    /// short spike to the limit is seen even when its requests were not
    /// timed.
    fn note_running(&self, running: usize) {
        if running > self.busiest.load(Ordering::Relaxed) {
            self.busiest.fetch_max(running, Ordering::Relaxed);
        }
    }

    /// One finished request's time, for the adaptive limit; it stands for
    /// `weight` requests.
    fn sample(&self, now: Instant, took: Duration, running: usize, weight: u32) {
        self.note_running(running);
        let Ok(mut g) = self.gradient.try_lock() else {
            // Another worker is updating: one sample fewer is fine.
            return;
        };
        g.sum += took;
        g.count += 1;
        g.finished = g.finished.saturating_add(weight);
        if now < g.window_end {
            return;
        }
        // A window closes at its end once it has five samples for its mean,
        // however long that takes (a collapsed service finishes few). Short
        // of them STALE past its end, it stays open but times every request
        // from then on: after a busy spell timed one in eight, a quiet
        // instance does not wait forty requests for its next mean.
        if g.count < 5 {
            if now >= g.window_end + STALE {
                self.sample_every.store(1, Ordering::Relaxed);
            }
            return;
        }
        let busiest = self.busiest.swap(0, Ordering::Relaxed);
        self.adapt(&mut g, now, busiest);
        // Time as many requests as keep SAMPLES_PER_WINDOW next window, if
        // it is as busy as this one: a power of two, so that picking one is
        // a mask.
        let every = (g.finished / SAMPLES_PER_WINDOW).clamp(1, MAX_SAMPLE_EVERY);
        self.sample_every
            .store(1 << every.ilog2(), Ordering::Relaxed);
        g.window_start = now;
        g.window_end = now + WINDOW;
        g.sum = Duration::ZERO;
        g.count = 0;
        g.finished = 0;
    }

    /// The limit, from a closed window's mean time and throughput, and the
    /// most requests that ran at once in it.
    fn adapt(&self, g: &mut Gradient, now: Instant, busiest: usize) {
        let elapsed = now.saturating_duration_since(g.window_start);
        let mean = g.sum.as_secs_f64() / f64::from(g.count);
        // The no-load baseline: the best mean seen, let rise by 0.5 % a
        // window so that a service that really got slower (a bigger
        // database) is not held to its old speed for ever, but slowly
        // enough (about 2x a minute) that an overload does not become the
        // norm while it lasts.
        g.baseline = mean.min(if g.baseline.is_finite() {
            g.baseline * BASELINE_RISE
        } else {
            mean
        });
        let baseline = g.baseline;
        let limit = g.limit;
        let elapsed = elapsed.as_secs_f64();
        if mean > TOLERANCE * baseline && mean > LATENCY_FLOOR.as_secs_f64() {
            // Slower than unloaded: requests queue inside. Little's law
            // gives the concurrency this throughput needs at the unloaded
            // time; drop to it, at most halving a window, never rising.
            let throughput = f64::from(g.finished) / elapsed;
            let needed = throughput * baseline * TOLERANCE + limit.sqrt();
            g.limit = needed.max(limit / 2.0).min(limit);
        } else if busiest >= self.limit() {
            // (Against the limit `try_acquire` enforces, the rounded one:
            // `busiest` never passes it.)
            // Fast enough, and every slot was taken: well below what the
            // service can do (a new instance meeting a thousand clients),
            // so double it, as TCP's slow start does: 100 to 1,000 in four
            // windows, a second. An overshoot shows as time past the floor
            // within a window, and halves it back.
            g.limit = limit * 2.0;
        } else if busiest as f64 >= limit / 2.0 {
            // Fast enough, and in use: room to grow.
            g.limit = limit + limit.sqrt();
        }
        g.limit = g.limit.clamp(MIN_LIMIT as f64, MAX_LIMIT as f64);
        self.limit
            .store(g.limit.round() as usize, Ordering::Relaxed);
    }
}

/// How long the router says the request waited before it reached us, from
/// `X-Request-Start`: milliseconds since the epoch (Heroku's), or
/// `t=SECONDS.MILLIS` (nginx's `t=${msec}`), or micro- or nanoseconds (New
/// Relic's convention, by magnitude).
pub fn queue_time(value: &str, now: SystemTime) -> Option<Duration> {
    let text = value.trim().trim_start_matches("t=");
    let now_us = now.duration_since(UNIX_EPOCH).ok()?.as_micros() as f64;
    let start_us = if text.contains('.') {
        text.parse::<f64>().ok()? * 1e6
    } else {
        let n = text.parse::<u64>().ok()? as f64;
        match n {
            n if n > 1e17 => n / 1e3,
            n if n > 1e14 => n,
            n if n > 1e11 => n * 1e3,
            n => n * 1e6,
        }
    };
    let waited = now_us - start_us;
    // A clock that disagrees by more than an hour is not a queue.
    (0.0..3.6e9)
        .contains(&waited)
        .then(|| Duration::from_micros(waited as u64))
}

/// The middleware (see the module's documentation): the limiter, the
/// largest body read before admission (`MAX_BODY_BYTES`), and the
/// per-client rate limit (`RATE_LIMIT`), if any.
#[derive(Clone)]
pub struct Overload(pub Arc<Limiter>, pub usize, pub Option<Arc<RateLimiter>>);

impl<S, B> Transform<S, ServiceRequest> for Overload
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = OverloadService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(OverloadService {
            service: Rc::new(service),
            limiter: self.0.clone(),
            max_body: self.1,
            rate: self.2.clone(),
            tick: std::cell::Cell::new(0),
        }))
    }
}

/// [`Overload`] around one worker's app.
pub struct OverloadService<S> {
    service: Rc<S>,
    limiter: Arc<Limiter>,
    max_body: usize,
    rate: Option<Arc<RateLimiter>>,
    /// Requests this worker has admitted, for [`Limiter::timing`].
    tick: std::cell::Cell<u32>,
}

/// A refusal as a response with the request's id, so the connection stays
/// open and the body carries the id like every problem.
fn refusal<B>(
    req: ServiceRequest,
    error: ApiError,
    headers: &[(HeaderName, HeaderValue)],
) -> ServiceResponse<EitherBody<B>> {
    let id = req
        .extensions()
        .get::<RequestInfo>()
        .map(|i| i.id.as_str().to_owned());
    let mut res = error.to_response(id.as_deref());
    for (name, value) in headers {
        res.headers_mut().insert(name.clone(), value.clone());
    }
    req.into_response(res).map_into_right_body()
}

/// Whether the request may carry `X-Request-Start`. With a short header
/// list (a GET's few), one pass over the names says so for less than a
/// hashed lookup, which the common request, without it, then skips.
fn has_request_start(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers.len_keys() > 8 || headers.keys().any(|n| *n == X_REQUEST_START)
}

/// The declared length of a body worth reading before admission: one that
/// fits `MAX_BODY_BYTES` (a bigger one is refused by the handler anyway).
fn body_to_read(req: &ServiceRequest, max: usize) -> Option<usize> {
    // A GET or HEAD carries no body that means anything (RFC 9110 §9.3.1,
    // §9.3.2): one that comes anyway is read by the handler, under the
    // limit, and the common request costs no header lookup here.
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let len: usize = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A client that sent `Expect: 100-continue` waits for the go-ahead; a
    // request the routes refuse (404, 415) must be answered without it.
    if req.headers().contains_key(actix_web::http::header::EXPECT) {
        return None;
    }
    (len > 0 && len <= max).then_some(len)
}

/// Reads the whole body (`len` bytes declared) and puts it back as the
/// request's payload, so the handler reads it from memory. Bounded by the
/// request middleware's `REQUEST_TIMEOUT`, like any body read.
async fn read_body(req: &mut ServiceRequest, len: usize) -> Result<(), Error> {
    use futures_core::Stream;
    let mut payload = req.take_payload();
    let mut body = bytes::BytesMut::with_capacity(len);
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut payload).poll_next(cx)).await {
        body.extend_from_slice(&chunk?);
    }
    req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    Ok(())
}

impl<S, B> Service<ServiceRequest> for OverloadService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Admission<S::Future, B>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        use crate::telemetry::layers;
        if crate::telemetry::is_probe(req.path()) || layers::off(layers::OVERLOAD) {
            return Admission::Unlimited {
                fut: self.service.call(req),
            };
        }
        let limiter = &self.limiter;
        // Each check looks at the request only when it is on: the common
        // path (no RATE_LIMIT, no X-Request-Start) reads no extension.
        let limited = self.rate.as_ref().and_then(|rate| {
            let ip = req.extensions().get::<RequestInfo>()?.client.ip?;
            rate.take(ip, Instant::now()).err().map(|wait| (rate, wait))
        });
        if let Some((rate, wait)) = limited {
            let headers = rate.headers(wait);
            let error = ApiError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many requests from this client: the limit is {}",
                    rate.describe()
                ),
            );
            let error = ApiError {
                retry_after: Some(wait.as_secs().max(1) as u32),
                ..error
            };
            metrics::counter!("rate_limited_total").increment(1);
            return Admission::Refused {
                res: Some(refusal(req, error, &headers)),
            };
        }
        if has_request_start(req.headers())
            && let Some(waited) = req
                .headers()
                .get(X_REQUEST_START)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| queue_time(v, SystemTime::now()))
            && req
                .extensions()
                .get::<RequestInfo>()
                .is_some_and(|i| i.client.via_trusted_proxy)
        {
            metrics::histogram!("http_request_queue_seconds").record(waited.as_secs_f64());
            if !limiter.budget.is_zero() && waited >= limiter.budget {
                let error = limiter.refuse(Reason::QueueTime);
                return Admission::Refused {
                    res: Some(refusal(req, error, &[])),
                };
            }
        }
        // A body is read before the request takes a slot: a client that
        // uploads slowly (or never finishes) holds memory it is allowed, not
        // capacity every other client needs.
        let body = body_to_read(&req, self.max_body);
        let timed = limiter.timing(&self.tick);
        if body.is_none() && limiter.try_acquire() {
            return Admission::Running {
                fut: self.service.call(req),
                permit: Some(Permit::new(limiter.clone(), timed)),
            };
        }
        let service = self.service.clone();
        let limiter = limiter.clone();
        let mut req = req;
        Admission::Queued {
            fut: Box::pin(async move {
                if let Some(len) = body {
                    read_body(&mut req, len).await?;
                }
                if !limiter.try_acquire() && !limiter.acquire_queued().await {
                    let error = limiter.refuse(Reason::Limit);
                    return Ok(refusal(req, error, &[]));
                }
                let _permit = Permit::new(limiter.clone(), timed);
                service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body)
            }),
        }
    }
}

/// A slot, given back when dropped (the response is ready, or the client
/// went away).
pub struct Permit {
    limiter: Arc<Limiter>,
    /// When a timed request started, and the requests it stands for.
    timed: Option<(Instant, u32)>,
}

impl Permit {
    fn new(limiter: Arc<Limiter>, weight: Option<u32>) -> Permit {
        Permit {
            limiter,
            timed: weight.map(|w| (Instant::now(), w)),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release(self.timed);
    }
}

type Queued<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>>>>;

pin_project_lite::pin_project! {
    /// A request through the limit: unlimited (a probe), running with its
    /// slot, queued for one (boxed: the rare path), or refused. Its fields
    /// are the middleware's own.
    #[project = AdmissionProj]
    #[allow(missing_docs)]
    pub enum Admission<F, B> {
        /// A probe.
        Unlimited { #[pin] fut: F },
        /// Admitted at once, holding a slot.
        Running { #[pin] fut: F, permit: Option<Permit> },
        /// Waiting for a slot, then running.
        Queued { fut: Queued<B> },
        /// Refused.
        Refused { res: Option<ServiceResponse<EitherBody<B>>> },
    }
}

impl<F, B> Future for Admission<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmissionProj::Unlimited { fut } => fut
                .poll(cx)
                .map(|r| r.map(ServiceResponse::map_into_left_body)),
            AdmissionProj::Running { fut, permit } => {
                let out = fut.poll(cx);
                if out.is_ready() {
                    drop(permit.take());
                }
                out.map(|r| r.map(ServiceResponse::map_into_left_body))
            }
            AdmissionProj::Queued { fut } => fut.as_mut().poll(cx),
            AdmissionProj::Refused { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
        }
    }
}

/// `RATE_LIMIT`: a token bucket per client address (the one
/// `TRUSTED_PROXIES` resolves, never a header a client sets), refilled at
/// `per_window` tokens every `window`, holding at most `burst`. Per
/// instance: N instances allow N times the rate.
#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    burst: u32,
    shards: Vec<Mutex<std::collections::HashMap<std::net::IpAddr, Bucket>>>,
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Clients remembered by one shard; with [`SHARDS`] shards, 65,536 in all.
/// Past it, clients whose bucket has refilled (idle for a window) are
/// forgotten first, then any: a flood of distinct addresses costs bounded
/// memory, at worst forgetting a limited client early.
const SHARD_CAPACITY: usize = 4096;
const SHARDS: usize = 16;

/// `RATE_LIMIT`'s value: `N/s` or `N/m`, with `;burst=B` optionally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting {
    /// Requests a window.
    pub per_window: u32,
    /// The window, in seconds (1 or 60).
    pub window_secs: u32,
    /// The most a client may send at once: the bucket's size.
    pub burst: u32,
}

impl RateSetting {
    /// Parses `20/s`, `600/m` or `20/s;burst=40`; the error says what is
    /// expected.
    pub fn parse(text: &str) -> Result<RateSetting, String> {
        let expected = || {
            "requests per second or minute, such as 20/s or 600/m, optionally with a burst: \
             20/s;burst=40 (each from 1 to 1000000)"
                .to_owned()
        };
        let (rate, burst) = match text.split_once(';') {
            Some((rate, extra)) => (
                rate.trim(),
                Some(
                    extra
                        .trim()
                        .strip_prefix("burst=")
                        .and_then(|b| b.trim().parse::<u32>().ok())
                        .ok_or_else(expected)?,
                ),
            ),
            None => (text.trim(), None),
        };
        let (n, unit) = rate.split_once('/').ok_or_else(expected)?;
        let n: u32 = n.trim().parse().map_err(|_| expected())?;
        let window_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            _ => return Err(expected()),
        };
        let burst = burst.unwrap_or(n);
        let ok = |v: u32| (1..=1_000_000).contains(&v);
        if !ok(n) || !ok(burst) {
            return Err(expected());
        }
        Ok(RateSetting {
            per_window: n,
            window_secs,
            burst,
        })
    }
}

impl RateLimiter {
    /// The limiter `setting` asks for.
    pub fn new(setting: RateSetting) -> RateLimiter {
        RateLimiter {
            per_window: setting.per_window,
            window: Duration::from_secs(u64::from(setting.window_secs)),
            burst: setting.burst,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(std::collections::HashMap::new()))
                .collect(),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.per_window) / self.window.as_secs_f64()
    }

    /// `20/s`, for a message.
    fn describe(&self) -> String {
        let unit = if self.window.as_secs() == 1 { "s" } else { "m" };
        format!("{}/{unit}", self.per_window)
    }

    /// Takes a token for `ip`; `Err` is how long until one is there.
    fn take(&self, ip: std::net::IpAddr, now: Instant) -> Result<(), Duration> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let shard = BuildHasherDefault::<DefaultHasher>::default().hash_one(ip) as usize % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.per_second();
        let burst = f64::from(self.burst);
        if !map.contains_key(&ip) && map.len() >= SHARD_CAPACITY {
            // Forget the clients whose bucket is full again, then, if that
            // is not an eighth of the shard, any down to seven eighths: one
            // scan frees room for many newcomers, so a flood costs amortized
            // constant time a request.
            let full = |b: &Bucket| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate >= burst
            };
            map.retain(|_, b| !full(b));
            let keep = SHARD_CAPACITY * 7 / 8;
            if map.len() > keep {
                let extra: Vec<_> = map.keys().take(map.len() - keep).copied().collect();
                for ip in extra {
                    map.remove(&ip);
                }
            }
        }
        let bucket = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled =
            bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// The draft's fields for a refused request (draft-ietf-httpapi-
    /// ratelimit-headers-10, sections 3 and 4): the policy, and no quota
    /// left until the next token, in whole seconds.
    fn headers(&self, wait: Duration) -> Vec<(HeaderName, HeaderValue)> {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let policy = format!(
            "\"default\";q={};w={}",
            self.per_window,
            self.window.as_secs()
        );
        let limit = format!("\"default\";r=0;t={secs}");
        [
            (HeaderName::from_static("ratelimit-policy"), policy),
            (HeaderName::from_static("ratelimit"), limit),
        ]
        .into_iter()
        .filter_map(|(n, v)| HeaderValue::from_str(&v).ok().map(|v| (n, v)))
        .collect()
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_time_reads_heroku_and_nginx_stamps() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        // Heroku: milliseconds since the epoch.
        assert_eq!(
            queue_time("1700000000000", now),
            Some(Duration::from_millis(500))
        );
        // nginx: t=seconds.milliseconds.
        assert_eq!(
            queue_time("t=1700000000.250", now),
            Some(Duration::from_millis(250))
        );
        // Microseconds.
        assert_eq!(
            queue_time("1700000000400000", now),
            Some(Duration::from_millis(100))
        );
        assert_eq!(queue_time("soon", now), None);
        assert_eq!(queue_time("1800000000000", now), None, "in the future");
    }

    #[test]
    fn rate_limit_settings_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            RateSetting::parse("20/s").unwrap(),
            RateSetting {
                per_window: 20,
                window_secs: 1,
                burst: 20
            }
        );
        assert_eq!(
            RateSetting::parse("600/m;burst=50").unwrap(),
            RateSetting {
                per_window: 600,
                window_secs: 60,
                burst: 50
            }
        );
        for bad in ["20", "20/h", "0/s", "x/s", "20/s;burst=", "20/s;b=4"] {
            assert!(RateSetting::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate_and_others_are_unaffected() {
        let r = RateLimiter::new(RateSetting::parse("2/s;burst=3").unwrap());
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take(a, t0).is_ok());
        }
        let wait = r.take(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(r.take(b, t0).is_ok(), "another client has its own bucket");
        assert!(r.take(a, t0 + Duration::from_millis(500)).is_ok());
        let h = r.headers(wait);
        assert_eq!(h[0].1, "\"default\";q=2;w=1");
        assert_eq!(h[1].1, "\"default\";r=0;t=1");
    }

    #[test]
    fn a_flood_of_distinct_addresses_keeps_memory_bounded() {
        let r = RateLimiter::new(RateSetting::parse("1/m").unwrap());
        let t0 = Instant::now();
        for i in 0..200_000u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = r.take(ip, t0);
        }
        assert!(r.clients() <= SHARDS * SHARD_CAPACITY, "{}", r.clients());
    }

    #[test]
    fn a_fixed_limit_admits_up_to_it_and_gives_slots_back() {
        let l = Limiter::new(Some(2), Duration::from_secs(30));
        assert!(l.try_acquire() && l.try_acquire());
        assert!(!l.try_acquire());
        l.release(None);
        assert!(l.try_acquire());
        assert_eq!(l.limit(), 2, "a fixed limit does not move");
    }

    #[test]
    fn a_busy_instance_times_one_request_in_several_and_a_quiet_one_all() {
        let l = Limiter::new(None, Duration::from_secs(30));
        let tick = std::cell::Cell::new(0);
        let timed = |n: usize| (0..n).filter(|_| l.timing(&tick).is_some()).count();
        assert_eq!(timed(64), 64, "a new instance times every request");
        // A window of `samples` timed requests of `weight`: all but the last
        // land while it is open, and the last, once it has ended, closes it.
        let window = |samples: u32, weight: u32| {
            let sample = || l.sample(Instant::now(), Duration::from_millis(1), 1, weight);
            l.gradient.lock().unwrap().window_end = Instant::now() + Duration::from_secs(3600);
            (1..samples).for_each(|_| sample());
            l.gradient.lock().unwrap().window_end = Instant::now();
            sample();
        };
        // 1,000 requests a window: one in eight is enough.
        window(1000, 1);
        assert_eq!(l.sample_every.load(Ordering::Relaxed), MAX_SAMPLE_EVERY);
        assert_eq!(timed(64), 8);
        assert_eq!(l.timing(&tick).map(|_| ()), None);
        // Each timed one stands for eight: 5 of them are 40 requests, so
        // one in two keeps 16 a window.
        window(5, 8);
        assert_eq!(l.sample_every.load(Ordering::Relaxed), 2);
        let weights: Vec<u32> = (0..4).filter_map(|_| l.timing(&tick)).collect();
        assert_eq!(weights, [2, 2]);
        // Quiet again: every request.
        window(5, 2);
        assert_eq!(l.sample_every.load(Ordering::Relaxed), 1);
        assert_eq!(timed(10), 10);
        // A busy spell, then quiet: a timed request a second past the end
        // of a window short of samples makes every request timed again,
        // and the window stays open for the mean it lacks.
        window(1000, 1);
        assert_eq!(l.sample_every.load(Ordering::Relaxed), MAX_SAMPLE_EVERY);
        let limit = l.limit();
        let now = Instant::now();
        {
            let mut g = l.gradient.lock().unwrap();
            g.window_start = now - Duration::from_secs(10);
            g.window_end = now - STALE;
        }
        l.sample(now, Duration::from_secs(5), 1, MAX_SAMPLE_EVERY);
        assert_eq!(l.sample_every.load(Ordering::Relaxed), 1);
        assert_eq!(l.gradient.lock().unwrap().count, 1, "still open");
        assert_eq!(l.limit(), limit, "one sample is no mean");
        // Its fifth sample closes it: 5 s a request, far past the floor
        // and the baseline, over ten seconds; the limit halves.
        for _ in 0..4 {
            l.sample(now, Duration::from_secs(5), 1, 1);
        }
        assert_eq!(l.gradient.lock().unwrap().count, 0, "closed");
        assert_eq!(l.limit(), limit / 2);
        // A fixed limit times nothing.
        let fixed = Limiter::new(Some(8), Duration::from_secs(30));
        assert!((0..10).all(|_| fixed.timing(&tick).is_none()));
    }

    #[test]
    fn a_timed_request_stands_for_its_weight_in_the_throughput() {
        let l = Limiter::new(None, Duration::from_secs(30));
        // A window from `start` closed at `start + len` by five samples of
        // `took`, each standing for `weight` requests.
        let window = |start: Instant, len: Duration, took: Duration, weight: u32| {
            let mut g = l.gradient.lock().unwrap();
            g.window_start = start;
            g.window_end = start + len;
            drop(g);
            for _ in 0..5 {
                l.sample(start + len, took, 1, weight);
            }
        };
        let t0 = Instant::now();
        // Unloaded: 10 ms, the baseline.
        window(t0, WINDOW, Duration::from_millis(10), 1);
        assert_eq!(l.limit(), INITIAL_LIMIT);
        // 400 ms, past the floor: five samples of weight 8 are 40 requests
        // in 10 ms, 4,000 a second. Little's law: 4,000 x 10.05 ms x 1.5
        // + sqrt(100) = 70 (with the samples counted once it would be 17.5,
        // held at the halving, 50).
        window(
            t0 + WINDOW,
            Duration::from_millis(10),
            Duration::from_millis(400),
            8,
        );
        assert_eq!(l.limit(), 70);
    }

    #[test]
    fn the_adaptive_limit_shrinks_when_requests_slow_and_grows_when_they_do_not() {
        let l = Limiter::new(None, Duration::from_secs(30));
        let window = |l: &Limiter, took: Duration, running: usize| {
            // Age the window, then a batch of samples closes it.
            let mut g = l.gradient.lock().unwrap();
            g.window_start -= WINDOW;
            g.window_end -= WINDOW;
            drop(g);
            for _ in 0..5 {
                l.sample(Instant::now(), took, running, 1);
            }
        };
        // In use and as fast as ever: it grows, faster when it was full.
        window(&l, Duration::from_millis(100), INITIAL_LIMIT / 2);
        let grown = l.limit();
        assert!(grown > INITIAL_LIMIT, "{grown}");
        window(&l, Duration::from_millis(100), grown);
        assert_eq!(l.limit(), grown * 2);
        // From a limit with a fraction under a half (120.4, enforced as
        // 120): every enforced slot taken doubles it too.
        l.gradient.lock().unwrap().limit = 120.4;
        l.limit.store(120, Ordering::Relaxed);
        window(&l, Duration::from_millis(100), 120);
        assert_eq!(l.limit(), 241, "120.4 doubled");
        let grown = l.limit();
        // Idle: no reason to grow.
        window(&l, Duration::from_millis(100), 1);
        assert_eq!(l.limit(), grown);
        // 2.4 times slower than the baseline, but under the floor: a pool
        // queue, not an overload; the limit holds.
        let floor = LATENCY_FLOOR.as_millis() as u64;
        window(&l, Duration::from_millis(floor - 10), 1);
        assert_eq!(l.limit(), grown, "shrank under {LATENCY_FLOOR:?}");
        // Four times slower and past the floor: it shrinks, window by
        // window, down to the floor at most.
        let mut last = grown;
        for _ in 0..30 {
            window(&l, Duration::from_millis(400), last);
            assert!(l.limit() <= last);
            last = l.limit();
        }
        assert!(last < INITIAL_LIMIT, "{last}");
        assert!(last >= MIN_LIMIT);
    }
}
