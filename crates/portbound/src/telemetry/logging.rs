//! Logs on stdout in the format the platform parses (text, logfmt or Cloud
//! Logging's JSON), written by a background thread so a slow stdout never
//! blocks a worker.
//!
//! Application logs go through `log` and `env_logger` as usual; the access
//! log takes a lean path: each worker formats its lines into a thread-local
//! buffer (no lock, no allocation per line) that is handed to the writer
//! thread every 20 ms or when it fills. Formatting, not writing, is what makes
//! a stock access log expensive, so both are kept cheap.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::HeaderValue;
use log::Level;

use crate::platform::LogFormat;

/// The log target of access lines: `RUST_LOG=portbound::access=off` turns
/// the access log off; `=debug` adds the probe paths.
pub const ACCESS_TARGET: &str = "portbound::access";
/// How often workers hand their access lines to the writer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A worker hands its buffer over early once it holds this much.
const BUFFER_LIMIT: usize = 64 * 1024;
/// Room past the limit for the line that crosses it, so a batch is never
/// reallocated while it is being filled.
const BUFFER_HEADROOM: usize = 4 * 1024;
/// Messages (access-line batches, single application records) queued for
/// the writer before new ones are dropped (and counted) rather than
/// blocking a worker...
const QUEUE_BATCHES: usize = 1024;
/// ...or bytes queued, whichever limit comes first.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Emptied batches kept for reuse.
const SPARE_BATCHES: usize = 8;

enum Msg {
    Bytes(Vec<u8>),
    Flush(SyncSender<()>),
}

struct Settings {
    format: LogFormat,
    access_info: bool,
    access_debug: bool,
    project: Option<String>,
}

static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();
static SETTINGS: OnceLock<Settings> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Bytes handed to the writer and not yet written.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
/// Batches the writer has emptied, for workers to fill again: a batch is
/// allocated once rather than per hand-over, and not freed by a thread other
/// than the one that allocated it.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static STARTED: AtomicBool = AtomicBool::new(false);

/// Lines dropped because stdout could not keep up (also a metric).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Installs the logger: `RUST_LOG` filter, the chosen format, stdout through
/// the writer thread. Calling it again keeps the first (tests start many
/// servers in one process).
pub fn init(filter: &str, format: LogFormat, project: Option<String>) {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let (tx, rx) = sync_channel(QUEUE_BATCHES);
    let _ = SINK.set(tx);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(rx))
        .expect("start the log writer thread");

    let logger = env_logger::Builder::new()
        .parse_filters(filter)
        .target(env_logger::Target::Pipe(Box::new(SinkWriter)))
        .format(move |buf, record| {
            let mut line = String::with_capacity(128);
            format_record(&mut line, format, record);
            buf.write_all(line.as_bytes())
        })
        .build();
    let max = logger.filter();
    let access_info = logger.matches(&meta(Level::Info));
    let access_debug = logger.matches(&meta(Level::Debug));
    // Clients' protocol mistakes that actix logs as errors come down to
    // info, once a minute, and are counted (protocol_errors).
    let logger = super::protocol_errors::Relevel::new(logger);
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        // Error and Warn always reach the logger, so that protocol errors
        // are counted whatever RUST_LOG shows.
        log::set_max_level(max.max(log::LevelFilter::Warn));
    }
    let _ = SETTINGS.set(Settings {
        format,
        access_info,
        access_debug,
        project,
    });
}

fn meta(level: Level) -> log::Record<'static> {
    log::Record::builder()
        .target(ACCESS_TARGET)
        .level(level)
        .build()
}

/// Hands this thread's access lines to the writer, then waits (at most a
/// second) until everything queued so far is on stdout. Called before exit.
pub fn flush() {
    flush_thread();
    let Some(sink) = SINK.get() else { return };
    let (ack_tx, ack_rx) = sync_channel(1);
    if sink.send(Msg::Flush(ack_tx)).is_ok() {
        let _ = ack_rx.recv_timeout(Duration::from_secs(1));
    }
}

fn write_loop(rx: Receiver<Msg>) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Write everything already queued, then flush once.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Bytes(bytes) => {
                    let _ = out.write_all(&bytes);
                    QUEUED.fetch_sub(bytes.len(), Ordering::Relaxed);
                    recycle(bytes);
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// An empty batch to fill: a spare one if there is one.
fn batch() -> Vec<u8> {
    SPARE
        .lock()
        .ok()
        .and_then(|mut spare| spare.pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_LIMIT + BUFFER_HEADROOM))
}

/// Keeps an emptied batch for reuse (application log records, sent one by
/// one, are too small to be worth keeping).
fn recycle(mut bytes: Vec<u8>) {
    if bytes.capacity() < BUFFER_LIMIT {
        return;
    }
    bytes.clear();
    if let Ok(mut spare) = SPARE.lock()
        && spare.len() < SPARE_BATCHES
    {
        spare.push(bytes);
    }
}

fn send(bytes: Vec<u8>) {
    let Some(sink) = SINK.get() else {
        // No logger installed (a library user's own setup): write directly.
        let _ = std::io::stdout().write_all(&bytes);
        return;
    };
    let len = bytes.len();
    let dropped = if QUEUED.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
        Some(bytes)
    } else {
        match sink.try_send(Msg::Bytes(bytes)) {
            Ok(()) => None,
            Err(TrySendError::Full(Msg::Bytes(b)) | TrySendError::Disconnected(Msg::Bytes(b))) => {
                Some(b)
            }
            Err(_) => None,
        }
    };
    if let Some(b) = dropped {
        QUEUED.fetch_sub(len, Ordering::Relaxed);
        DROPPED.fetch_add(
            b.iter().filter(|c| **c == b'\n').count() as u64,
            Ordering::Relaxed,
        );
        recycle(b);
    }
}

/// env_logger's output: each formatted record goes to the writer thread.
struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A worker's access lines, handed over when the thread ends too.
struct AccessBuffer(RefCell<Vec<u8>>);

impl Drop for AccessBuffer {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut *self.0.borrow_mut());
        if !bytes.is_empty() {
            send(bytes);
        }
    }
}

thread_local! {
    static ACCESS: AccessBuffer = AccessBuffer(RefCell::new(batch()));
    static TICKER: Cell<bool> = const { Cell::new(false) };
    /// The request id of the request being polled on this thread.
    static CURRENT_REQUEST: RefCell<Option<HeaderValue>> = const { RefCell::new(None) };
}

/// Hands this thread's buffered access lines to the writer.
pub fn flush_thread() {
    ACCESS.with(|b| {
        let mut buf = b.0.borrow_mut();
        if !buf.is_empty() {
            let full = std::mem::replace(&mut *buf, batch());
            send(full);
        }
    });
}

/// Starts this worker's 20 ms flush timer, once per thread. Called where
/// actix builds each worker's app, inside the worker's runtime.
pub fn start_worker_flusher() {
    if TICKER.with(|t| t.replace(true)) {
        return;
    }
    actix_rt::spawn(async {
        let mut tick = actix_rt::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            flush_thread();
        }
    });
}

/// Runs `f` with `id` as the current request id (for application log lines
/// written while serving it).
pub fn with_request_id<R>(id: &HeaderValue, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT_REQUEST.with(|c| c.replace(Some(id.clone())));
    let out = f();
    CURRENT_REQUEST.with(|c| *c.borrow_mut() = previous);
    out
}

/// One access log line's facts.
pub struct AccessRecord<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The request id.
    pub request_id: &'a str,
    /// The client's address: the peer's, or a trusted proxy's word for it.
    pub client: Option<IpAddr>,
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The query string as the client sent it (without `?`); empty for none.
    /// Logged with the values of secret-looking parameters redacted.
    pub query: &'a str,
    /// The HTTP version (`HTTP/1.1`).
    pub version: &'a str,
    /// The response status.
    pub status: u16,
    /// The response body's size, when known.
    pub bytes: Option<u64>,
    /// From the request's arrival to its response.
    pub latency: Duration,
    /// The client's `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The trace id: the request's span's, or from `traceparent` or
    /// `X-Cloud-Trace-Context`.
    pub trace_id: Option<&'a str>,
    /// The request's span id, when traces are exported.
    pub span_id: Option<&'a str>,
    /// Probe paths are logged at debug, everything else at info.
    pub probe: bool,
}

/// Whether an access line at this level would be written (checked before any
/// formatting work is done).
pub fn access_enabled(probe: bool) -> bool {
    SETTINGS
        .get()
        .is_some_and(|s| if probe { s.access_debug } else { s.access_info })
}

/// Formats and buffers one access line.
pub fn access(rec: &AccessRecord<'_>) {
    let Some(settings) = SETTINGS.get() else {
        return;
    };
    ACCESS.with(|b| {
        let mut buf = b.0.borrow_mut();
        write_access(&mut buf, settings.format, settings.project.as_deref(), rec);
        if buf.len() >= BUFFER_LIMIT {
            let full = std::mem::replace(&mut *buf, batch());
            send(full);
        }
    });
}

/// Writes one access line in `format` (public for the format tests). Built
/// from byte pushes and `itoa` rather than `write!`: this runs per request,
/// and `core::fmt` was most of the access log's cost.
pub fn write_access(
    out: &mut Vec<u8>,
    format: LogFormat,
    project: Option<&str>,
    rec: &AccessRecord<'_>,
) {
    let micros = u64::try_from(rec.latency.as_micros()).unwrap_or(u64::MAX);
    let with_query;
    let target = if rec.query.is_empty() {
        rec.path
    } else {
        with_query = request_target(rec.path, rec.query);
        with_query.as_str()
    };
    match format {
        LogFormat::Text => {
            push_time(out, rec.time);
            out.extend_from_slice(if rec.probe { b" DEBUG " } else { b" INFO  " });
            out.extend_from_slice(ACCESS_TARGET.as_bytes());
            out.extend_from_slice(b": ");
            push_ip(out, rec.client);
            out.extend_from_slice(b" \"");
            out.extend_from_slice(rec.method.as_bytes());
            out.push(b' ');
            push_escaped(out, target, false);
            out.push(b' ');
            out.extend_from_slice(rec.version.as_bytes());
            out.extend_from_slice(b"\" ");
            push_u64(out, u64::from(rec.status));
            out.push(b' ');
            push_bytes(out, rec.bytes);
            out.push(b' ');
            push_millis(out, micros);
            out.extend_from_slice(b"ms \"");
            push_escaped(out, rec.user_agent.unwrap_or("-"), false);
            out.extend_from_slice(b"\" request_id=");
            out.extend_from_slice(rec.request_id.as_bytes());
            push_span_ids(out, rec);
            out.push(b'\n');
        }
        LogFormat::Logfmt => {
            out.extend_from_slice(b"time=");
            push_time(out, rec.time);
            out.extend_from_slice(if rec.probe {
                b" level=debug at=access request_id="
            } else {
                b" level=info at=access request_id="
            });
            out.extend_from_slice(rec.request_id.as_bytes());
            out.extend_from_slice(b" client=");
            push_ip(out, rec.client);
            out.extend_from_slice(b" method=");
            out.extend_from_slice(rec.method.as_bytes());
            out.extend_from_slice(b" path=");
            push_logfmt(out, target);
            out.extend_from_slice(b" status=");
            push_u64(out, u64::from(rec.status));
            out.extend_from_slice(b" bytes=");
            push_bytes(out, rec.bytes);
            out.extend_from_slice(b" duration_ms=");
            push_millis(out, micros);
            out.extend_from_slice(b" user_agent=");
            push_logfmt(out, rec.user_agent.unwrap_or("-"));
            push_span_ids(out, rec);
            out.push(b'\n');
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"time\":\"");
            push_time(out, rec.time);
            out.extend_from_slice(if rec.probe {
                b"\",\"severity\":\"DEBUG\",\"message\":\""
            } else {
                b"\",\"severity\":\"INFO\",\"message\":\""
            });
            out.extend_from_slice(rec.method.as_bytes());
            out.push(b' ');
            push_escaped(out, rec.path, true);
            out.push(b' ');
            push_u64(out, u64::from(rec.status));
            out.extend_from_slice(b"\",\"httpRequest\":{\"requestMethod\":\"");
            out.extend_from_slice(rec.method.as_bytes());
            // Cloud Logging's requestUrl: the path with its query (the host
            // is the router's business).
            out.extend_from_slice(b"\",\"requestUrl\":\"");
            push_escaped(out, target, true);
            out.extend_from_slice(b"\",\"status\":");
            push_u64(out, u64::from(rec.status));
            if let Some(b) = rec.bytes {
                // Cloud Logging's LogEntry wants int64 values as strings.
                out.extend_from_slice(b",\"responseSize\":\"");
                push_u64(out, b);
                out.push(b'"');
            }
            if let Some(ua) = rec.user_agent {
                out.extend_from_slice(b",\"userAgent\":\"");
                push_escaped(out, ua, true);
                out.push(b'"');
            }
            if rec.client.is_some() {
                out.extend_from_slice(b",\"remoteIp\":\"");
                push_ip(out, rec.client);
                out.push(b'"');
            }
            // A duration in seconds with a trailing "s", microsecond precision.
            out.extend_from_slice(b",\"latency\":\"");
            push_u64(out, micros / 1_000_000);
            out.push(b'.');
            push_padded(out, micros % 1_000_000, 6);
            out.extend_from_slice(b"s\",\"protocol\":\"");
            out.extend_from_slice(rec.version.as_bytes());
            out.extend_from_slice(b"\"},\"request_id\":\"");
            out.extend_from_slice(rec.request_id.as_bytes());
            out.push(b'"');
            // Cloud Logging links a line to its trace only through the full
            // resource name, which needs the project.
            match (rec.trace_id, project) {
                (Some(trace), Some(p)) => {
                    out.extend_from_slice(b",\"logging.googleapis.com/trace\":\"projects/");
                    push_escaped(out, p, true);
                    out.extend_from_slice(b"/traces/");
                    out.extend_from_slice(trace.as_bytes());
                    out.push(b'"');
                }
                (Some(trace), None) => {
                    out.extend_from_slice(b",\"trace_id\":\"");
                    out.extend_from_slice(trace.as_bytes());
                    out.push(b'"');
                }
                _ => {}
            }
            if let Some(span) = rec.span_id {
                // Cloud Logging's span field; with the trace field above it
                // links the line to the span in Cloud Trace.
                if project.is_some() {
                    out.extend_from_slice(b",\"logging.googleapis.com/spanId\":\"");
                } else {
                    out.extend_from_slice(b",\"span_id\":\"");
                }
                out.extend_from_slice(span.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// ` trace_id=... span_id=...` when the request has a span (text and logfmt).
fn push_span_ids(out: &mut Vec<u8>, rec: &AccessRecord<'_>) {
    if let (Some(trace), Some(span)) = (rec.trace_id, rec.span_id) {
        out.extend_from_slice(b" trace_id=");
        out.extend_from_slice(trace.as_bytes());
        out.extend_from_slice(b" span_id=");
        out.extend_from_slice(span.as_bytes());
    }
}

/// Parameter names whose values never reach the log: a query is a common
/// place for credentials (`?access_token=`, `?api_key=`, an OAuth `code`,
/// pre-signed URLs' `X-Amz-Signature=` and Azure's `sig=`). A name matches
/// when it contains one of these, in any case, after percent-decoding.
/// Redacting too much costs a little debugging; too little leaks a secret.
const SECRET_NAMES: [&str; 11] = [
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "sig",
    "auth",
    "code",
    "jwt",
    "session",
    "credential",
];

/// `path?query`, with the value of every parameter whose name contains one
/// of `SECRET_NAMES` replaced by `REDACTED`.
pub fn request_target(path: &str, query: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        out.push_str(name);
        let Some(value) = value else { continue };
        out.push('=');
        let decoded = percent_decoded_lowercase(name);
        if SECRET_NAMES.iter().any(|s| decoded.contains(s)) && !value.is_empty() {
            out.push_str("REDACTED");
        } else {
            out.push_str(value);
        }
    }
    out
}

/// `name` with `%XX` escapes and `+` decoded, in ASCII lower case.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` with at least `width` digits, zero-padded.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// Microseconds as milliseconds with three decimals (`1.234`).
fn push_millis(out: &mut Vec<u8>, micros: u64) {
    push_u64(out, micros / 1000);
    out.push(b'.');
    push_padded(out, micros % 1000, 3);
}

fn push_bytes(out: &mut Vec<u8>, bytes: Option<u64>) {
    match bytes {
        Some(b) => push_u64(out, b),
        None => out.push(b'-'),
    }
}

/// Formats one application log record (public for the format tests).
pub fn format_record(line: &mut String, format: LogFormat, record: &log::Record<'_>) {
    let mut time = Vec::with_capacity(24);
    push_time(&mut time, SystemTime::now());
    let time = std::str::from_utf8(&time).unwrap_or_default();
    let message = record.args().to_string();
    let request_id = CURRENT_REQUEST.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    });
    match format {
        LogFormat::Text => {
            let _ = write!(
                line,
                "{time} {:<5} {}: {message}",
                record.level(),
                record.target()
            );
            if let Some(id) = request_id {
                let _ = write!(line, " request_id={id}");
            }
            line.push('\n');
        }
        LogFormat::Logfmt => {
            let mut bytes = Vec::with_capacity(message.len() + 64);
            let _ = write!(
                bytes,
                "time={time} level={} target={} msg=",
                record.level().as_str().to_ascii_lowercase(),
                record.target()
            );
            push_logfmt(&mut bytes, &message);
            if let Some(id) = request_id {
                let _ = write!(bytes, " request_id={id}");
            }
            bytes.push(b'\n');
            line.push_str(&String::from_utf8_lossy(&bytes));
        }
        LogFormat::Json => {
            let mut bytes = Vec::with_capacity(message.len() + 96);
            let _ = write!(
                bytes,
                "{{\"time\":\"{time}\",\"severity\":\"{}\",\"target\":\"",
                severity(record.level())
            );
            push_escaped(&mut bytes, record.target(), true);
            bytes.extend_from_slice(b"\",\"message\":\"");
            push_escaped(&mut bytes, &message, true);
            bytes.push(b'"');
            if let Some(id) = request_id {
                let _ = write!(bytes, ",\"request_id\":\"{id}\"");
            }
            bytes.extend_from_slice(b"}\n");
            line.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

/// Cloud Logging's severities.
fn severity(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug | Level::Trace => "DEBUG",
    }
}

fn push_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        // The common case, without core::fmt: four integers and three dots.
        Some(IpAddr::V4(v4)) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
}

/// Escapes quotes, backslashes and control characters (and, for JSON, writes
/// them as `\u00XX`), so no client-supplied string can break a line.
fn push_escaped(out: &mut Vec<u8>, s: &str, json: bool) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                if json {
                    let _ = write!(out, "\\u{b:04x}");
                } else {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            _ => out.push(b),
        }
    }
}

/// A logfmt value: bare when it is one plain token, quoted otherwise.
fn push_logfmt(out: &mut Vec<u8>, s: &str) {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b > b' ' && b != b'"' && b != b'=' && b != b'\\' && b != 0x7f);
    if bare {
        out.extend_from_slice(s.as_bytes());
    } else {
        out.push(b'"');
        push_escaped(out, s, false);
        out.push(b'"');
    }
}

thread_local! {
    /// The second last formatted on this thread and its text up to the
    /// seconds (`2026-11-24T11:11:39.`): under load, every line in that
    /// second reuses it.
    static TIME_PREFIX: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 UTC with milliseconds (`2026-11-24T11:11:39.536Z`), without a
/// date library: the civil-from-days algorithm (Howard Hinnant's), run once
/// a second per thread.
pub fn push_time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    TIME_PREFIX.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let mut prefix = Vec::with_capacity(20);
            write_date_time(&mut prefix, secs);
            if let Ok(p) = <[u8; 20]>::try_from(prefix.as_slice()) {
                *cache = (secs, p);
            } else {
                // Years past 9999 do not fit the cache; write them out.
                out.extend_from_slice(&prefix);
                push_padded(out, u64::from(d.subsec_millis()), 3);
                out.push(b'Z');
                return;
            }
        }
        out.extend_from_slice(&cache.1);
        push_padded(out, u64::from(d.subsec_millis()), 3);
        out.push(b'Z');
    });
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` since the Unix epoch.
fn write_date_time(out: &mut Vec<u8>, secs: u64) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptied_batches_are_kept_for_reuse_and_small_ones_are_not() {
        let spare = || {
            SPARE
                .lock()
                .unwrap()
                .iter()
                .map(|b| b.as_ptr())
                .collect::<Vec<_>>()
        };
        let mut big = batch();
        assert!(big.capacity() >= BUFFER_LIMIT + BUFFER_HEADROOM);
        big.extend_from_slice(b"a line\n");
        let big_ptr = big.as_ptr();
        recycle(big);
        assert!(spare().contains(&big_ptr), "a full-size batch is kept");
        assert!(
            SPARE.lock().unwrap().iter().all(Vec::is_empty),
            "kept batches are emptied"
        );

        let small = b"one application log record\n".to_vec();
        let small_ptr = small.as_ptr();
        recycle(small);
        assert!(
            !spare().contains(&small_ptr),
            "a small record's buffer is not kept"
        );

        for _ in 0..SPARE_BATCHES * 2 {
            recycle(Vec::with_capacity(BUFFER_LIMIT));
        }
        assert!(spare().len() <= SPARE_BATCHES, "the pool is bounded");
    }

    fn sample() -> AccessRecord<'static> {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            request_id: "abc-123",
            client: Some("192.0.2.7".parse().unwrap()),
            method: "GET",
            path: "/api/v1/info",
            query: "",
            version: "HTTP/1.1",
            status: 200,
            bytes: Some(187),
            latency: Duration::from_micros(1234),
            user_agent: Some("curl/8.5 \"quoted\""),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: None,
            probe: false,
        }
    }

    fn line(format: LogFormat, project: Option<&str>) -> String {
        let mut out = Vec::new();
        write_access(&mut out, format, project, &sample());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn queries_are_logged_with_secret_values_redacted() {
        assert_eq!(
            request_target("/search", "q=rust&page=2&flag"),
            "/search?q=rust&page=2&flag"
        );
        assert_eq!(
            request_target(
                "/cb",
                "state=1&code=c&access_token=abc&API_KEY=k&X-Amz-Signature=s&sig=az&Password=p\
                 &client_secret=x&authz=y&%74oken=t&empty_token="
            ),
            "/cb?state=1&code=REDACTED&access_token=REDACTED&API_KEY=REDACTED\
             &X-Amz-Signature=REDACTED&sig=REDACTED&Password=REDACTED&client_secret=REDACTED\
             &authz=REDACTED&%74oken=REDACTED&empty_token="
        );
        assert_eq!(percent_decoded_lowercase("%74OKEN%2"), "token%2");
        let mut rec = sample();
        rec.query = "q=1&token=hunter2";
        for format in [LogFormat::Text, LogFormat::Logfmt, LogFormat::Json] {
            let mut out = Vec::new();
            write_access(&mut out, format, None, &rec);
            let line = String::from_utf8(out).unwrap();
            assert!(line.contains("/api/v1/info?q=1&token=REDACTED"), "{line}");
            assert!(!line.contains("hunter2"), "{line}");
        }
    }

    #[test]
    fn time_is_rfc3339_utc() {
        let mut out = Vec::new();
        push_time(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(951_782_400_007),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2000-02-29T00:00:00.007Z");
        // the cached prefix is replaced when the second changes
        let mut out = Vec::new();
        push_time(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(951_782_401_999),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2000-02-29T00:00:01.999Z");
    }

    #[test]
    fn json_lines_are_cloud_logging_entries() {
        let text = line(LogFormat::Json, Some("my-project"));
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["severity"], "INFO");
        assert_eq!(v["httpRequest"]["status"], 200);
        assert_eq!(v["httpRequest"]["requestMethod"], "GET");
        assert_eq!(v["httpRequest"]["remoteIp"], "192.0.2.7");
        assert_eq!(v["httpRequest"]["responseSize"], "187");
        assert_eq!(v["httpRequest"]["latency"], "0.001234s");
        assert_eq!(v["httpRequest"]["userAgent"], "curl/8.5 \"quoted\"");
        assert_eq!(
            v["logging.googleapis.com/trace"],
            "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(v["request_id"], "abc-123");
    }

    #[test]
    fn logfmt_lines_are_key_value_pairs() {
        let text = line(LogFormat::Logfmt, None);
        assert!(text.contains(" status=200 "), "{text}");
        assert!(text.contains(" request_id=abc-123 "), "{text}");
        assert!(
            text.contains(r#"user_agent="curl/8.5 \"quoted\"""#),
            "{text}"
        );
        assert!(text.starts_with("time=2026-"), "{text}");
    }

    #[test]
    fn nothing_a_client_sends_can_break_a_line() {
        let mut rec = sample();
        rec.path = "/a\nb\"c\u{7}";
        rec.user_agent = Some("x\r\ny\\");
        for format in [LogFormat::Text, LogFormat::Logfmt, LogFormat::Json] {
            let mut out = Vec::new();
            write_access(&mut out, format, None, &rec);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.matches('\n').count(), 1, "{format:?}: {text}");
            assert!(!text.contains('\r') && !text.contains('\u{7}'));
            if format == LogFormat::Json {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["httpRequest"]["requestUrl"], "/a\nb\"c\u{7}");
            }
        }
    }
}
