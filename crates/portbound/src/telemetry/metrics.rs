//! Prometheus metrics, served on their own port (`METRICS_PORT`) so they are
//! never reachable through the public one.
//!
//! Per request: a count and a latency bucket, in series that belong to one
//! worker each and are summed at scrape time. A request touches no lock and
//! no memory another core writes: two workers counting into one shared
//! atomic (what a global registry's handles do) bounce its cache line
//! between cores on every request, which costs more than the counting.
//! Everything that can be read at scrape time instead (in-flight, draining,
//! readiness, backing services, process figures) is, so it costs the request
//! path nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use foldhash::fast::FixedState;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";
/// Latency buckets from 0.5 ms to 10 s: this service answers in well under a
/// millisecond, its callers wait seconds at most.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process. None when another recorder was
/// installed first (a library user's own).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            #[cfg(feature = "postgres")]
            crate::database::describe_metrics();
            #[cfg(feature = "upstreams")]
            crate::upstream::describe_metrics();
            #[cfg(feature = "otel")]
            crate::telemetry::otel::describe_metrics();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("http_requests_in_flight", "HTTP requests being served");
    describe_gauge!("portbound_draining", "1 once a stop signal arrived");
    describe_gauge!(
        "overload_limit",
        "requests the service's routes may run at once (adaptive unless MAX_CONCURRENT_REQUESTS)"
    );
    describe_gauge!(
        "overload_queued",
        "requests waiting for a slot under the limit"
    );
    describe_counter!(
        "overload_shed_total",
        "requests refused with 503 before running, by reason (limit, queue_time)"
    );
    metrics::describe_histogram!(
        "http_request_queue_seconds",
        metrics::Unit::Seconds,
        "time requests waited at the router before they arrived (X-Request-Start)"
    );
    describe_gauge!("portbound_ready", "1 while /readyz answers 200");
    describe_gauge!(
        "portbound_backing_service_up",
        "1 while the backing service answers its probe"
    );
    describe_gauge!(
        "portbound_build_info",
        "the running version and the runtime's, as labels"
    );
    describe_counter!(
        "portbound_log_lines_dropped_total",
        "log lines dropped because stdout could not keep up"
    );
    describe_counter!(
        "http_protocol_errors_total",
        "requests and frames refused for breaking HTTP or WebSocket, by kind"
    );
    describe_gauge!("process_resident_memory_bytes", "resident set size");
    describe_counter!("process_cpu_seconds_total", "user and system CPU time");
    describe_gauge!("process_open_fds", "open file descriptors");
    describe_gauge!(
        "process_start_time_seconds",
        "start time since the Unix epoch"
    );
}

/// The route label of a request: the name of the resource it matched (the
/// app names each resource by its pattern), never the raw path, so the
/// label set stays bounded whatever paths clients send; `unmatched` when no
/// named resource matched. Names are interned once per worker: a request
/// pays one lookup by the name's address.
pub fn route_label(match_name: Option<&str>) -> &'static str {
    thread_local! {
        static LABELS: RefCell<HashMap<(usize, usize), &'static str, FixedState>> =
            RefCell::new(HashMap::with_hasher(FixedState::default()));
    }
    let Some(name) = match_name else {
        return "unmatched";
    };
    // The name lives in the worker's resource map for the worker's life, so
    // its address and length identify it.
    LABELS.with(|labels| {
        let mut labels = labels.borrow_mut();
        let label = labels
            .entry((name.as_ptr() as usize, name.len()))
            .or_insert_with(|| intern(name));
        // Another app on this thread may have reused the address (tests
        // build many): the text decides.
        if *label != name {
            *label = intern(name);
        }
        *label
    })
}

/// One `&'static str` per distinct resource name in the process (a few
/// dozen at most: resources are the app's, not the client's).
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// The method label: the standard methods, anything else as `OTHER`, so a
/// client inventing methods cannot grow the label set.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Labels by address: the route and method labels are `&'static str`s, so
/// their pointers identify them without hashing their text per request.
type Key = (usize, usize, u16);

/// One worker's requests of one method, route and status. Written by that
/// worker only (a load and a store, no locked instruction), read at scrape
/// time.
struct Series {
    method: &'static str,
    route: &'static str,
    status: u16,
    /// Requests per latency bucket (`BUCKETS`, then the rest), not yet
    /// cumulative.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Total latency, in nanoseconds.
    nanos: AtomicU64,
}

/// `BUCKETS` in nanoseconds, compared against each request's latency.
const BUCKET_NANOS: [u64; BUCKETS.len()] = {
    let mut out = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        out[i] = (BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
};

fn bump(cell: &AtomicU64, by: u64) {
    // One writer per series: no read-modify-write instruction needed.
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// Every worker's series, for the scrape. Locked when a worker meets a new
/// label set, and when scraping; never per request.
static SERIES: Mutex<Vec<Arc<Series>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<HashMap<Key, Arc<Series>, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// Counts one request. `route` is a route pattern (bounded), never a raw path.
pub fn record(route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let key = (route.as_ptr() as usize, method.as_ptr() as usize, status);
        let series = local.entry(key).or_insert_with(|| {
            let series = Arc::new(Series {
                method,
                route,
                status,
                buckets: Default::default(),
                nanos: AtomicU64::new(0),
            });
            SERIES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(series.clone());
            series
        });
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&le| nanos <= le)
            .unwrap_or(BUCKETS.len());
        bump(&series.buckets[bucket], 1);
        bump(&series.nanos, nanos);
    });
}

/// `http_requests_total` and `http_request_duration_seconds`, every
/// worker's series summed, in the Prometheus text format.
fn render_requests(out: &mut String) {
    // (method, route, status) -> (per-bucket counts, total nanoseconds)
    let mut sums: BTreeMap<(&str, &str, u16), ([u64; BUCKETS.len() + 1], u64)> = BTreeMap::new();
    for s in SERIES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let (buckets, nanos) = sums.entry((s.method, s.route, s.status)).or_default();
        for (sum, cell) in buckets.iter_mut().zip(&s.buckets) {
            *sum = sum.wrapping_add(cell.load(Ordering::Relaxed));
        }
        *nanos = nanos.wrapping_add(s.nanos.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP {REQUESTS} HTTP requests served, by method, route pattern and status\n\
         # TYPE {REQUESTS} counter"
    );
    for ((method, route, status), (buckets, _)) in &sums {
        let count: u64 = buckets.iter().sum();
        let _ = writeln!(
            out,
            "{REQUESTS}{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP {DURATION} HTTP request latency, by method, route pattern and status\n\
         # TYPE {DURATION} histogram"
    );
    for ((method, route, status), (buckets, nanos)) in &sums {
        let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{DURATION}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let count = cumulative + buckets[BUCKETS.len()];
        let _ = writeln!(out, "{DURATION}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{DURATION}_sum{{{labels}}} {}", *nanos as f64 / 1e9);
        let _ = writeln!(out, "{DURATION}_count{{{labels}}} {count}");
    }
}

/// The exposition, with the scrape-time gauges brought up to date.
pub fn render(state: &AppState) -> String {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return String::new();
    };
    gauge!("http_requests_in_flight").set(state.drain.in_flight() as f64);
    gauge!("overload_limit").set(state.overload.limit() as f64);
    gauge!("overload_queued").set(state.overload.queued() as f64);
    #[cfg(feature = "postgres")]
    crate::database::record_metrics();
    let draining = state.drain.is_draining();
    gauge!("portbound_draining").set(f64::from(u8::from(draining)));
    gauge!("portbound_ready").set(f64::from(u8::from(!draining && state.probes.all_up())));
    for s in state.probes.reports() {
        gauge!("portbound_backing_service_up", "service" => s.name).set(f64::from(u8::from(s.up)));
    }
    gauge!(
        "portbound_build_info",
        "service" => state.facts.name,
        "version" => state.facts.version,
        "runtime" => crate::VERSION
    )
    .set(1.0);
    counter!("portbound_log_lines_dropped_total").absolute(super::logging::dropped_lines());
    for (kind, n) in super::protocol_errors::counts() {
        counter!("http_protocol_errors_total", "kind" => kind).absolute(n);
    }
    process_metrics(state);
    let mut out = handle.render();
    render_requests(&mut out);
    out
}

/// Process figures from /proc (Linux); absent elsewhere.
fn process_metrics(state: &AppState) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    {
        gauge!("process_resident_memory_bytes").set(kb * 1024.0);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces).
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based), in clock ticks of
        // 1/100 s on Linux.
        if let (Some(u), Some(s)) = (fields.get(11), fields.get(12))
            && let (Ok(u), Ok(s)) = (u.parse::<u64>(), s.parse::<u64>())
        {
            counter!("process_cpu_seconds_total").absolute((u + s) / 100);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = now.saturating_sub(state.facts.started.elapsed());
    gauge!("process_start_time_seconds").set(start.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_resource_names_interned() {
        assert_eq!(route_label(None), "unmatched");
        let a = String::from("/api/v1/things/{id}");
        let first = route_label(Some(&a));
        assert_eq!(first, "/api/v1/things/{id}");
        let b = String::from("/api/v1/things/{id}");
        // Another allocation of the same name: the same &'static str.
        assert!(std::ptr::eq(first, route_label(Some(&b))));
        drop(a);
        let c = String::from("/other/{x}");
        assert_eq!(route_label(Some(&c)), "/other/{x}");
    }

    #[test]
    fn bucket_bounds_in_nanoseconds_are_exact() {
        assert_eq!(BUCKET_NANOS[0], 500_000);
        assert_eq!(BUCKET_NANOS[2], 2_500_000);
        assert_eq!(BUCKET_NANOS[5], 25_000_000);
        assert_eq!(BUCKET_NANOS[BUCKETS.len() - 1], 10_000_000_000);
    }

    #[test]
    fn workers_series_add_up_to_one_cumulative_histogram() {
        const ROUTE: &str = "/test/histogram";
        let ms = Duration::from_millis;
        // Two workers (threads), each with its own series for the labels.
        std::thread::spawn(move || {
            record(ROUTE, "GET", 200, Duration::from_micros(400));
            record(ROUTE, "GET", 200, ms(3));
        })
        .join()
        .unwrap();
        record(ROUTE, "GET", 200, ms(3));
        record(ROUTE, "GET", 200, ms(20_000));
        record(ROUTE, "GET", 500, ms(1));

        let mut text = String::new();
        render_requests(&mut text);
        let value = |series: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        };
        let labels = r#"method="GET",route="/test/histogram",status="200""#;
        assert_eq!(
            value(&format!("http_requests_total{{{labels}}}")),
            Some(4.0),
            "{text}"
        );
        let bucket = |le: &str| {
            value(&format!(
                r#"http_request_duration_seconds_bucket{{{labels},le="{le}"}}"#
            ))
        };
        assert_eq!(bucket("0.0005"), Some(1.0), "{text}");
        assert_eq!(bucket("0.0025"), Some(1.0), "{text}");
        assert_eq!(bucket("0.005"), Some(3.0), "{text}");
        assert_eq!(bucket("10"), Some(3.0), "{text}");
        assert_eq!(bucket("+Inf"), Some(4.0), "{text}");
        assert_eq!(
            value(&format!("http_request_duration_seconds_count{{{labels}}}")),
            Some(4.0)
        );
        let sum = value(&format!("http_request_duration_seconds_sum{{{labels}}}")).unwrap();
        assert!((sum - 20.0064).abs() < 1e-9, "{sum}");
        let errors = r#"method="GET",route="/test/histogram",status="500""#;
        assert_eq!(
            value(&format!("http_requests_total{{{errors}}}")),
            Some(1.0)
        );
        // Each family is described once, before its samples.
        assert_eq!(
            text.matches("# TYPE http_requests_total counter").count(),
            1
        );
        assert_eq!(
            text.matches("# TYPE http_request_duration_seconds histogram")
                .count(),
            1
        );
    }
}
