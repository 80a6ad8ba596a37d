//! OpenTelemetry traces over OTLP (the `otel` feature): a server span for
//! each request, a client span for each upstream call (the request's child,
//! and the parent the upstream continues), and a client span for each
//! database query handed to `Database::run` (the `postgres` feature).
//!
//! **Configured by the standard variables** (OpenTelemetry specification,
//! `sdk-environment-variables.md` and `protocol/exporter.md`), read here,
//! with the `.env` file, and validated: a bad value stops the process with
//! 78, naming it.
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended). Neither: no
//!   exporter, no spans, and no per-request cost beyond one branch.
//! - `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,...`, values URL-decoded: an
//!   API key for Grafana Cloud or Honeycomb; never logged).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` only (the default).
//! - `OTEL_EXPORTER_OTLP_TIMEOUT` / `_TRACES_TIMEOUT` (milliseconds, 10 s).
//! - `OTEL_SERVICE_NAME` (the service's name by default), which wins over
//!   `OTEL_RESOURCE_ATTRIBUTES`' `service.name`; the resource also gets the
//!   platform's facts (`cloud.platform`, `cloud.region`,
//!   `service.instance.id`, `service.version`).
//! - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
//!   (`parentbased_always_on` by default).
//! - `OTEL_SDK_DISABLED=true` turns it all off. The Rust SDK does not read
//!   this one (nor `OTEL_PROPAGATORS`), so the runtime does.
//! - `OTEL_BSP_MAX_QUEUE_SIZE` (2,048, the SDK's default): the most spans
//!   held, queued or being exported. The other `OTEL_BSP_*` (the batch's
//!   delay and size) are read by the SDK.
//!
//! **Never in a request's way.** Spans are queued to the SDK's batch
//! processor, which exports from a thread of its own with reqwest's blocking
//! client: a slow or absent collector costs a request nothing, and a full
//! queue drops spans rather than blocking. Every span dropped is counted,
//! in `otel_spans_dropped_total{reason}`: `export_failed` (the collector
//! down, refusing, or slower than the timeout) or `queue_full` (held spans
//! at `OTEL_BSP_MAX_QUEUE_SIZE` while an export is slow). The SDK counts
//! the second kind only privately, so the runtime keeps the queue's bound
//! itself, in front of it: see `Bounded`. The provider is shut down (the
//! queue flushed) after the drain, off the workers.
//!
//! Spans carry the semantic conventions' attributes: `http.request.method`,
//! `http.route` (the route's pattern, never the raw path),
//! `http.response.status_code`, `server.address`, `server.port`,
//! `peer.service`, `db.system.name`; never a query's values, a header's or
//! a URL's credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::backing::Secret;
use crate::platform::{InstanceFacts, Platform};

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    /// Where spans go: the full traces URL.
    pub endpoint: String,
    /// Headers on every export (an API key): never shown.
    pub headers: Secret<Vec<(String, String)>>,
    /// `OTEL_SERVICE_NAME`, when set.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`' pairs.
    pub resource: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` (and its argument, in thousandths).
    pub sampler: SamplerSetting,
    /// One export's limit.
    pub timeout: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: the most spans held at once.
    pub queue: usize,
}

/// `OTEL_TRACES_SAMPLER`, its ratio in millionths (an integer keeps the
/// settings comparable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerSetting {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`.
    Ratio(u32),
    /// `parentbased_always_on` (the default).
    ParentAlwaysOn,
    /// `parentbased_always_off`.
    ParentAlwaysOff,
    /// `parentbased_traceidratio`.
    ParentRatio(u32),
}

/// Reads the `OTEL_*` variables through `get`: `Ok(None)` when there is
/// nowhere to export to, or `OTEL_SDK_DISABLED=true`. `Err` holds (variable,
/// value shown, what is expected) for each bad one.
pub fn settings(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtelSettings>, Vec<(String, String, String)>> {
    let mut problems = Vec::new();
    let mut bad = |var: &str, value: &str, expected: &str| {
        problems.push((var.to_owned(), value.to_owned(), expected.to_owned()));
    };
    let get = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let disabled = match get("OTEL_SDK_DISABLED").as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            bad("OTEL_SDK_DISABLED", v, "true or false");
            false
        }
    };
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.clone(), url)),
        (None, Some(base)) => {
            let full = format!("{}/v1/traces", base.trim_end_matches('/'));
            Some(("OTEL_EXPORTER_OTLP_ENDPOINT", base, full))
        }
        (None, None) => None,
    };
    // Both are checked when set, though the traces one wins.
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        if let Some(given) = get(var) {
            let ok = url::Url::parse(&given)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                bad(
                    var,
                    &crate::backing::redact_credentials(&given),
                    "an http(s) URL of an OTLP receiver, such as http://localhost:4318",
                );
            }
        }
    }
    if let Some(p) = get("OTEL_EXPORTER_OTLP_PROTOCOL")
        && p != "http/protobuf"
    {
        bad(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            &p,
            "http/protobuf (the only protocol this build exports)",
        );
    }
    let headers = match get("OTEL_EXPORTER_OTLP_HEADERS") {
        None => Vec::new(),
        Some(text) => match pairs(&text, true) {
            Some(h) => h,
            None => {
                // The value holds a key: named, not shown.
                bad(
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "(hidden)",
                    "key=value pairs separated by commas, values URL-encoded",
                );
                Vec::new()
            }
        },
    };
    let resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
        None => Vec::new(),
        Some(text) => pairs(&text, true).unwrap_or_else(|| {
            bad(
                "OTEL_RESOURCE_ATTRIBUTES",
                &text,
                "key=value pairs separated by commas, values URL-encoded",
            );
            Vec::new()
        }),
    };
    let ratio = |default: u32, bad: &mut dyn FnMut(&str, &str, &str)| -> u32 {
        match get("OTEL_TRACES_SAMPLER_ARG") {
            None => default,
            Some(arg) => match arg.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => (r * 1_000_000.0).round() as u32,
                _ => {
                    bad("OTEL_TRACES_SAMPLER_ARG", &arg, "a ratio from 0 to 1");
                    default
                }
            },
        }
    };
    let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => SamplerSetting::ParentAlwaysOn,
        Some("always_on") => SamplerSetting::AlwaysOn,
        Some("always_off") => SamplerSetting::AlwaysOff,
        Some("parentbased_always_off") => SamplerSetting::ParentAlwaysOff,
        Some("traceidratio") => SamplerSetting::Ratio(ratio(1_000_000, &mut bad)),
        Some("parentbased_traceidratio") => SamplerSetting::ParentRatio(ratio(1_000_000, &mut bad)),
        Some(other) => {
            bad(
                "OTEL_TRACES_SAMPLER",
                other,
                "always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            );
            SamplerSetting::ParentAlwaysOn
        }
    };
    let mut timeout = Duration::from_secs(10);
    for var in [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ] {
        if let Some(ms) = get(var) {
            match ms.parse::<u64>() {
                Ok(ms) if (1..=600_000).contains(&ms) => timeout = Duration::from_millis(ms),
                _ => bad(var, &ms, "milliseconds from 1 to 600000"),
            }
        }
    }
    // The SDK's own default (OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, 2,048, in
    // src/trace/span_processor.rs of opentelemetry_sdk 0.33.1), which the runtime
    // enforces in front of its queue.
    let mut queue = opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT;
    if let Some(n) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
        match n.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => queue = n,
            _ => bad("OTEL_BSP_MAX_QUEUE_SIZE", &n, "spans from 1 to 1000000"),
        }
    }
    let service_name = get("OTEL_SERVICE_NAME");
    if !problems.is_empty() {
        return Err(problems);
    }
    if disabled {
        return Ok(None);
    }
    Ok(endpoint.map(|(_, _, endpoint)| OtelSettings {
        endpoint,
        headers: Secret::new(headers),
        service_name,
        resource,
        sampler,
        timeout,
        queue,
    }))
}

/// `k=v,k2=v2` (the W3C Baggage form the OTLP variables use), values
/// URL-decoded.
fn pairs(text: &str, decode: bool) -> Option<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            let v = v.trim();
            let v = if decode {
                percent_decode(v)?
            } else {
                v.to_owned()
            };
            Some((k.to_owned(), v))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The process's tracer, once [`init`] has run with an endpoint.
static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Whether spans are made at all.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Starts the exporter and the tracer for `service`. Called once, before
/// the server starts.
pub fn init(
    settings: &OtelSettings,
    service: (&str, &str),
    platform: Platform,
    instance: &InstanceFacts,
) -> Result<(), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.timeout)
        .with_headers(
            settings
                .headers
                .get()
                .iter()
                .cloned()
                .collect::<HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| format!("the OTLP exporter cannot start: {e}"))?;
    let mut attributes: Vec<KeyValue> = settings
        .resource
        .iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let name = settings
        .service_name
        .clone()
        .or_else(|| {
            settings
                .resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| service.0.to_owned());
    attributes.push(KeyValue::new("service.name", name));
    attributes.push(KeyValue::new("service.version", service.1.to_owned()));
    // The platform's facts, in the resource semantic conventions' names.
    let cloud = match platform {
        Platform::CloudRun => Some(("gcp", "gcp_cloud_run")),
        Platform::Heroku => Some(("heroku", "heroku")),
        Platform::Fly => Some(("fly", "fly")),
        Platform::Railway => Some(("railway", "railway")),
        Platform::Render => Some(("render", "render")),
        Platform::Kubernetes | Platform::Local => None,
    };
    if let Some((provider, platform)) = cloud {
        attributes.push(KeyValue::new("cloud.provider", provider));
        attributes.push(KeyValue::new("cloud.platform", platform));
    }
    if let Some(region) = &instance.region {
        attributes.push(KeyValue::new("cloud.region", region.clone()));
    }
    if let Some(id) = &instance.instance {
        attributes.push(KeyValue::new("service.instance.id", id.clone()));
    }
    let sampler = match settings.sampler {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(f64::from(r) / 1_000_000.0),
        SamplerSetting::ParentAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerSetting::ParentAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerSetting::ParentRatio(r) => Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(f64::from(r) / 1_000_000.0),
        )),
    };
    let held = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        held: held.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue)
            .build(),
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: batch,
            held,
            capacity: settings.queue,
        })
        .with_sampler(sampler)
        .with_resource(
            Resource::builder_empty()
                .with_attributes(attributes)
                .build(),
        )
        .build();
    let tracer = provider.tracer("portbound");
    TRACER
        .set((provider, tracer))
        .map_err(|_| "the tracer was started twice".to_owned())?;
    log::info!(
        "traces: exported over OTLP to {}",
        shown(&settings.endpoint)
    );
    Ok(())
}

/// The SDK's batch processor behind a bound of the runtime's own: the
/// spans held (handed to the SDK and not yet through an export, whether
/// queued or being sent) never pass `capacity`, and a span over it is
/// dropped here and counted (`reason="queue_full"`). The SDK's channel
/// holds `capacity` too, and the held spans include every span in it, so
/// the SDK itself never drops one uncounted. Cost: one atomic operation a
/// span, on the worker that ends it.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    held: Arc<AtomicUsize>,
    capacity: usize,
}

impl opentelemetry_sdk::trace::SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.held.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("otel_spans_dropped_total", "reason" => "queue_full").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting what it sends and what it drops: a dead or slow
/// collector fails the export (after `OTEL_EXPORTER_OTLP_TIMEOUT`), and the
/// batch is gone. Either way its spans are no longer held ([`Bounded`]).
/// The SDK's batch processor calls it from its own thread, never a
/// worker's.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    held: Arc<AtomicUsize>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.held.fetch_sub(spans, Ordering::AcqRel);
        let spans = spans as u64;
        match &result {
            Ok(()) => metrics::counter!("otel_spans_exported_total").increment(spans),
            Err(e) => {
                metrics::counter!("otel_spans_dropped_total", "reason" => "export_failed")
                    .increment(spans);
                // The exporter's error may quote the endpoint: its
                // credentials are taken out first.
                log::debug!(
                    "traces: {spans} spans not exported: {}",
                    crate::backing::redact_credentials(&e.to_string())
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's counters, for the metrics listener.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "otel_spans_exported_total",
        "Spans the OTLP collector accepted"
    );
    metrics::describe_counter!(
        "otel_spans_dropped_total",
        "Spans dropped, by reason: export_failed (the collector down, slow past \
         OTEL_EXPORTER_OTLP_TIMEOUT, or refusing them) or queue_full \
         (OTEL_BSP_MAX_QUEUE_SIZE spans held while an export was slow)"
    );
}

/// An endpoint without credentials, for the log.
fn shown(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "(an endpoint)".to_owned(),
        |mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        },
    )
}

/// The longest the last export may take after the drain: inside the 5 s
/// margin every platform's drain leaves before its SIGKILL (2 s on Cloud
/// Run, whose margin is 2 s, would be too long; there the spans still
/// queued are dropped rather than the process killed mid-write).
const FLUSH_BUDGET: Duration = Duration::from_millis(1500);

/// Flushes the spans still queued and stops the exporter: after the drain,
/// from the main thread (never a worker's runtime, which the SDK's blocking
/// shutdown would stall), within 1.5 s.
pub fn shutdown() {
    if let Some((provider, _)) = TRACER.get()
        && let Err(e) = provider.shutdown_with_timeout(FLUSH_BUDGET)
    {
        log::warn!("traces: the last spans were not all exported: {e}");
    }
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Headers to put on an outbound call.
#[derive(Default)]
pub struct Inject(pub Vec<(HeaderName, HeaderValue)>);

impl Injector for Inject {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.push((k, v));
        }
    }
}

/// A request's server span: its context (the parent of what the handler
/// calls), and its ids for the access log.
#[derive(Debug, Clone)]
pub struct ServerSpan {
    /// The context holding the span.
    pub cx: Context,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
}

/// Starts a request's server span, the child of the caller's `traceparent`
/// when it sent one. `None` when tracing is off.
pub fn server_span(headers: &HeaderMap, method: &str) -> Option<ServerSpan> {
    let (_, tracer) = TRACER.get()?;
    let parent = TraceContextPropagator::new().extract(&Extract(headers));
    let span = tracer
        .span_builder(method.to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("http.request.method", method.to_owned())])
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let sc = cx.span().span_context().clone();
    Some(ServerSpan {
        trace_id: sc.trace_id().to_string(),
        span_id: sc.span_id().to_string(),
        cx,
    })
}

/// Ends a server span with the response: its route pattern (the span's
/// name becomes `METHOD ROUTE`) and status.
pub fn end_server_span(span: &ServerSpan, method: &str, route: Option<&str>, status: u16) {
    let s = span.cx.span();
    if let Some(route) = route {
        s.set_attribute(KeyValue::new("http.route", route.to_owned()));
        s.update_name(format!("{method} {route}"));
    }
    s.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    // Server spans: only 5xx is an error (the semantic conventions).
    if status >= 500 {
        s.set_status(Status::error(status.to_string()));
    }
    s.end();
}

/// A client span under `parent` (an upstream call or a query), and the
/// headers that carry it to an upstream. `None` when tracing is off.
pub fn client_span(
    parent: &Context,
    name: String,
    attributes: Vec<KeyValue>,
) -> Option<(Context, Vec<(HeaderName, HeaderValue)>)> {
    let (_, tracer) = TRACER.get()?;
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    let cx = parent.with_span(span);
    let mut inject = Inject::default();
    TraceContextPropagator::new().inject_context(&cx, &mut inject);
    Some((cx, inject.0))
}

/// Ends a client span: its outcome, as a status code or an error type.
pub fn end_client_span(cx: &Context, status: Option<u16>, error: Option<&str>) {
    let s = cx.span();
    if let Some(code) = status {
        s.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    if let Some(kind) = error {
        s.set_attribute(KeyValue::new("error.type", kind.to_owned()));
        s.set_status(Status::error(kind.to_owned()));
    } else if status.is_some_and(|c| c >= 400) {
        s.set_status(Status::error(status.unwrap_or_default().to_string()));
    }
    s.end();
}

thread_local! {
    /// The context of the request being polled on this thread (the parent
    /// of a query the handler runs).
    static CURRENT: std::cell::RefCell<Option<Context>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `span` as the current request's span on this thread.
pub fn with_span<R>(span: Option<&ServerSpan>, f: impl FnOnce() -> R) -> R {
    let Some(span) = span else {
        return f();
    };
    let previous = CURRENT.with(|c| c.replace(Some(span.cx.clone())));
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    out
}

/// The context of the request being polled here, if tracing is on.
pub fn current() -> Option<Context> {
    if !enabled() {
        return None;
    }
    CURRENT.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<OtelSettings>, Vec<(String, String, String)>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings(|k| map.get(k).cloned())
    }

    #[test]
    fn no_endpoint_or_disabled_means_no_tracing() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(
            read(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ])
            .unwrap(),
            None
        );
    }

    #[test]
    fn endpoints_headers_and_samplers_as_the_specification_reads_them() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example/otlp/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20abc%3D,x-team=k",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://otlp.example/otlp/v1/traces");
        assert_eq!(
            s.headers.get(),
            &vec![
                ("Authorization".to_owned(), "Basic abc=".to_owned()),
                ("x-team".to_owned(), "k".to_owned())
            ]
        );
        assert_eq!(s.sampler, SamplerSetting::ParentRatio(250_000));
        assert!(!format!("{s:?}").contains("abc"), "headers are hidden");
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/custom");
        assert_eq!(s.queue, 2048, "the SDK's default");
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.queue, 100);
    }

    #[test]
    fn each_bad_value_is_named() {
        for (var, value) in [
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let mut vars = vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                ),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let problems = read(&vars).expect_err(var);
            assert!(
                problems.iter().any(|(v, _, _)| v == var),
                "{var}: {problems:?}"
            );
        }
    }
}
