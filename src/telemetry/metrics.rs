//! Prometheus metrics, served on their own port (`METRICS_PORT`) so they are
//! never reachable through the public one.
//!
//! Per request: one counter and one histogram observation, through handles
//! each worker caches (no registry lookup, no lock). Everything that can be
//! read at scrape time instead (in-flight, draining, readiness, backing
//! services, process figures) is, so it costs the request path nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.into()), BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            // Histograms keep raw samples (16 bytes each) until upkeep folds
            // them in: every second, so at ~90k requests a second they hold
            // about 1.5 MB rather than the 7 MB five seconds would.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "HTTP requests served, by method, route pattern and status"
    );
    describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by method, route pattern and status"
    );
    describe_gauge!("http_requests_in_flight", "HTTP requests being served");
    describe_gauge!("portbound_draining", "1 once a stop signal arrived");
    describe_gauge!("portbound_ready", "1 while /readyz answers 200");
    describe_gauge!(
        "portbound_backing_service_up",
        "1 while the backing service answers its probe"
    );
    describe_gauge!("portbound_build_info", "the running version, as a label");
    describe_counter!(
        "portbound_log_lines_dropped_total",
        "log lines dropped because stdout could not keep up"
    );
    describe_gauge!("process_resident_memory_bytes", "resident set size");
    describe_counter!("process_cpu_seconds_total", "user and system CPU time");
    describe_gauge!("process_open_fds", "open file descriptors");
    describe_gauge!(
        "process_start_time_seconds",
        "start time since the Unix epoch"
    );
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

thread_local! {
    static HANDLES: RefCell<HashMap<Key, (Counter, Histogram), foldhash::fast::FixedState>> =
        RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::default()));
}

/// Counts one request. `route` is a route pattern (bounded), never a raw path.
pub fn record(route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        let key = (route.as_ptr() as usize, method.as_ptr() as usize, status);
        let (c, hist) = h.entry(key).or_insert_with(|| {
            let labels = [
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ];
            (counter!(REQUESTS, &labels), histogram!(DURATION, &labels))
        });
        c.increment(1);
        hist.record(elapsed.as_secs_f64());
    });
}

/// The exposition, with the scrape-time gauges brought up to date.
pub fn render(state: &AppState) -> String {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return String::new();
    };
    gauge!("http_requests_in_flight").set(state.drain.in_flight() as f64);
    let draining = state.drain.is_draining();
    gauge!("portbound_draining").set(f64::from(u8::from(draining)));
    gauge!("portbound_ready").set(f64::from(u8::from(!draining && state.probes.all_up())));
    for s in state.probes.reports() {
        gauge!("portbound_backing_service_up", "service" => s.name).set(f64::from(u8::from(s.up)));
    }
    gauge!("portbound_build_info", "version" => crate::VERSION).set(1.0);
    counter!("portbound_log_lines_dropped_total").absolute(super::logging::dropped_lines());
    process_metrics(state);
    handle.render()
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
