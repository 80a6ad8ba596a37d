//! Backing services (the 12-factor article's `AUTH_SERVICE_URL`): every
//! `*_SERVICE_URL` names one, and so do `DATABASE_URL` and `REDIS_URL`, the
//! names the platforms' add-ons inject (Heroku Postgres and Key-Value Store,
//! Railway, Render, Fly). A background thread probes each over TCP on an
//! interval with a short timeout, the service's own readiness checks
//! ([`crate::Service::readiness`]) run on the same interval, and `/readyz`
//! reads the last results, so a slow dependency can never make the
//! readiness probe itself slow.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use url::Url;
use utoipa::ToSchema;

/// The suffix that marks a backing service's variable.
pub const SUFFIX: &str = "_SERVICE_URL";

/// Backing services by the names platform add-ons give them: Heroku
/// Postgres sets `DATABASE_URL` (devcenter.heroku.com/articles/heroku-postgresql),
/// Heroku Key-Value Store `REDIS_URL`, and Railway, Render and Fly's
/// database offerings use the same two names. Other `*_URL` variables are
/// not assumed to be services (`RENDER_EXTERNAL_URL` is this service's own
/// address).
pub const ADD_ON_VARIABLES: [&str; 2] = ["DATABASE_URL", "REDIS_URL"];

/// Whether `variable` names a backing service.
pub fn is_backing_variable(variable: &str) -> bool {
    variable.ends_with(SUFFIX) || ADD_ON_VARIABLES.contains(&variable)
}

/// The settings of one `NAME_SERVICE_URL` upstream, each its own variable
/// (`AUTH_SERVICE_TIMEOUT` for `AUTH_SERVICE_URL`).
pub const SETTINGS: [&str; 5] = [
    "_SERVICE_TIMEOUT",
    "_SERVICE_RETRIES",
    "_SERVICE_RETRY_BUDGET",
    "_SERVICE_BREAKER",
    "_SERVICE_HEALTH_PATH",
];

/// Whether `variable` is a setting of an upstream (`AUTH_SERVICE_TIMEOUT`).
pub fn is_service_setting(variable: &str) -> bool {
    SETTINGS
        .iter()
        .any(|s| variable.strip_suffix(s).is_some_and(|p| !p.is_empty()))
}

/// How calls to one upstream are bounded (`portbound::upstream`, the
/// `upstreams` feature). The defaults start from .NET's standard resilience
/// handler (dotnet/extensions `HttpStandardResilienceOptions`: 10 s an
/// attempt, retries of transient failures with exponential backoff and
/// jitter honouring `Retry-After`, a circuit breaker open for 5 s) and
/// differ where the reason is written beside the field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamLimits {
    /// One attempt's limit (`NAME_SERVICE_TIMEOUT`, seconds): 10 s, .NET's.
    /// A call also never outlives what is left of its request's
    /// `REQUEST_TIMEOUT`.
    pub timeout: Duration,
    /// Retries after the first attempt (`NAME_SERVICE_RETRIES`, 0 to 5): 2,
    /// not .NET's 3, because the whole call must fit in the caller's own
    /// 30 s budget and a third wait of seconds rarely does.
    pub retries: u32,
    /// The share of calls retries may add (`NAME_SERVICE_RETRY_BUDGET`, 0
    /// to 1): 0.1, gRPC's retry throttling (gRFC A6: a token bucket of 10
    /// that loses 1 a failure and gains 0.1 a success, retrying only above
    /// half), so a failing upstream sees at most about 10 % more load.
    pub retry_budget: f64,
    /// The circuit breaker, or `None` (`NAME_SERVICE_BREAKER=off`).
    pub breaker: Option<BreakerLimits>,
}

/// When a circuit breaker opens (`NAME_SERVICE_BREAKER=RATIO,MIN,WINDOW,OPEN`,
/// for example `0.5,20,30,5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerLimits {
    /// The share of failed calls that opens it: 0.5. .NET's 0.1 trips on a
    /// single error in ten, which a small service sees in normal times.
    pub failure_ratio: f64,
    /// The fewest calls in the window before it may open: 20. .NET's 100
    /// in 30 s is more than a small service makes, so it would never open.
    pub min_calls: u32,
    /// The window the ratio is measured over: 30 s, .NET's.
    pub window: Duration,
    /// How long it stays open, answering 503 at once, before one call is
    /// let through to test the upstream: 5 s, .NET's.
    pub open_for: Duration,
}

// The ratios are parsed as finite numbers in (0, 1], never NaN, so equality
// is total.
impl Eq for UpstreamLimits {}
impl Eq for BreakerLimits {}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            timeout: Duration::from_secs(10),
            retries: 2,
            retry_budget: 0.1,
            breaker: Some(BreakerLimits::default()),
        }
    }
}

impl Default for BreakerLimits {
    fn default() -> Self {
        BreakerLimits {
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(5),
        }
    }
}

impl BreakerLimits {
    /// `RATIO,MIN,WINDOW,OPEN` or `off`; the error says what is expected.
    pub fn parse(text: &str) -> Result<Option<BreakerLimits>, String> {
        let expected = || {
            "`off`, or RATIO,MIN_CALLS,WINDOW_SECONDS,OPEN_SECONDS such as 0.5,20,30,5 \
             (a ratio above 0 up to 1, at least one call, seconds above 0)"
                .to_owned()
        };
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [ratio, min, window, open] = parts[..] else {
            return Err(expected());
        };
        let ratio: f64 = ratio.parse().map_err(|_| expected())?;
        let min: u32 = min.parse().map_err(|_| expected())?;
        let secs = |t: &str| {
            t.parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(expected)
        };
        if !(ratio > 0.0 && ratio <= 1.0) || min == 0 {
            return Err(expected());
        }
        Ok(Some(BreakerLimits {
            failure_ratio: ratio,
            min_calls: min,
            window: secs(window)?,
            open_for: secs(open)?,
        }))
    }
}

/// `value` with any userinfo (`user:password@`) replaced by `REDACTED@`,
/// for error messages: a URL that does not parse may still hold a password.
pub fn redact_credentials(value: &str) -> String {
    let Some(start) = value.find("://").map(|i| i + 3) else {
        return value.to_owned();
    };
    let authority_end = value[start..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| start + i);
    match value[start..authority_end].rfind('@') {
        Some(at) => format!("{}REDACTED{}", &value[..start], &value[start + at..]),
        None => value.to_owned(),
    }
}

/// libpq takes a URL with no host and a unix socket's directory in `host=`
/// (`postgres://user:pass@/db?host=/cloudsql/...`, the form Cloud SQL's
/// guide gives); URL parsers (the `url` crate, sqlx's) refuse an empty host.
/// A placeholder host is put in, which the `host=` parameter overrides.
pub fn with_placeholder_host(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    if authority.is_empty() || authority.ends_with('@') {
        format!("{}localhost{}", &url[..end], &url[end..]).into()
    } else {
        url.into()
    }
}

/// Ports of the schemes a database or cache URL uses, which the `url` crate
/// does not know (it knows http, https, ws, wss, ftp).
fn scheme_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" | "postgresql" => Some(5432),
        "mysql" | "mariadb" => Some(3306),
        "redis" | "rediss" | "valkey" | "valkeys" => Some(6379),
        "mongodb" => Some(27017),
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "nats" => Some(4222),
        _ => None,
    }
}

/// A value that may hold a credential: compared like the value, never
/// shown by `Debug`, so no `{:?}` of the configuration prints a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Keeps `value` out of `Debug`.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself.
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

/// One backing service, from `NAME_SERVICE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingService {
    /// `auth` for `AUTH_SERVICE_URL`.
    pub name: String,
    /// The variable it came from.
    pub variable: String,
    /// The URL without credentials, query or fragment: safe to show.
    pub display_url: String,
    host: String,
    port: u16,
    /// A PostgreSQL unix socket (`?host=/cloudsql/...`): probed there, not
    /// over TCP.
    socket: Option<std::path::PathBuf>,
    /// The URL as given (credentials and all): where calls go. Never shown:
    /// its `Debug` hides it.
    url: Secret<Url>,
    /// For an `http://` `*_SERVICE_URL`: the path its readiness GET asks
    /// (`NAME_SERVICE_HEALTH_PATH`, `/healthz` by default).
    health_path: Option<String>,
    /// How calls to it are bounded (the `upstreams` feature).
    pub limits: UpstreamLimits,
}

impl BackingService {
    /// Validates `value` of `variable`; the error says what is expected.
    pub fn parse(variable: &str, value: &str) -> Result<BackingService, String> {
        let expected = || {
            "an absolute URL with a host and a port (or a scheme with a known port), \
             such as http://auth-service:5001 or postgres://user:password@db:5432/app \
             (a unix-socket URL has no host to probe)"
                .to_owned()
        };
        if let Ok(url) = Url::parse(&with_placeholder_host(value))
            && let Some(service) = Self::postgres_socket(variable, &url)
        {
            return Ok(service);
        }
        let url = Url::parse(value).map_err(|_| expected())?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(expected)?;
        let port = url
            .port_or_known_default()
            .or_else(|| scheme_port(url.scheme()))
            .ok_or_else(expected)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut display = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        if let Some(p) = url.port() {
            display.push_str(&format!(":{p}"));
        }
        if url.path() != "/" {
            display.push_str(url.path());
        }
        // An HTTP service answers a GET on its health path (over TLS for
        // https, which the `upstreams` feature brings); anything else (a
        // database, a cache) gets the protocol-neutral TCP connect.
        let health_path = (variable.ends_with(SUFFIX) && matches!(url.scheme(), "http" | "https"))
            .then(|| "/healthz".to_owned());
        Ok(BackingService {
            name: variable
                .strip_suffix(SUFFIX)
                .or_else(|| variable.strip_suffix("_URL"))
                .unwrap_or(variable)
                .to_ascii_lowercase(),
            variable: variable.to_owned(),
            display_url: display,
            host,
            port,
            socket: None,
            url: Secret(url),
            health_path,
            limits: UpstreamLimits::default(),
        })
    }

    /// PostgreSQL's unix-socket form, as Cloud SQL hands it to Cloud Run:
    /// `postgres://user:password@/db?host=/cloudsql/PROJECT:REGION:INSTANCE`
    /// (https://cloud.google.com/sql/docs/postgres/connect-run). The server
    /// listens on `DIR/.s.PGSQL.PORT` (libpq's convention,
    /// https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-HOST).
    fn postgres_socket(variable: &str, url: &Url) -> Option<BackingService> {
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return None;
        }
        let dir = url
            .query_pairs()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.into_owned())
            .filter(|v| v.starts_with('/'))?;
        let port = url
            .query_pairs()
            .find(|(k, _)| k == "port")
            .and_then(|(_, v)| v.parse().ok())
            .or(url.port())
            .unwrap_or(5432);
        Some(BackingService {
            name: variable
                .strip_suffix("_URL")
                .unwrap_or(variable)
                .to_ascii_lowercase(),
            variable: variable.to_owned(),
            display_url: format!("{}://{}?host={dir}", url.scheme(), url.path()).replacen(
                "://localhost/",
                ":///",
                1,
            ),
            host: String::new(),
            port,
            socket: Some(std::path::Path::new(&dir).join(format!(".s.PGSQL.{port}"))),
            url: Secret(url.clone()),
            health_path: None,
            limits: UpstreamLimits::default(),
        })
    }

    /// The URL calls go to (with any credentials: never show it).
    pub fn url(&self) -> &Url {
        &self.url.0
    }

    /// The path the readiness probe GETs, for an `http://` service.
    pub fn health_path(&self) -> Option<&str> {
        self.health_path.as_deref()
    }

    /// Sets the health path of a service probed by GET
    /// (`NAME_SERVICE_HEALTH_PATH`); `None` (its `none`) makes the probe a
    /// TCP connect only, for an upstream that serves no health path, such
    /// as a third party's API.
    pub(crate) fn set_health_path(&mut self, path: Option<String>) {
        if self.health_path.is_some() {
            self.health_path = path;
        }
    }

    /// An `http://` service: a GET of its health path, which must answer
    /// 2xx within `timeout` (a process that accepts connections but cannot
    /// serve is down). Anything else, `https://` included: a TCP connect
    /// (with the `upstreams` feature, an `https://` service's probe is
    /// replaced by the same GET over TLS: `upstream::https_probe`).
    fn probe(&self, timeout: Duration) -> Result<Duration, String> {
        if let Some(socket) = &self.socket {
            let start = Instant::now();
            return std::os::unix::net::UnixStream::connect(socket)
                .map(|_| start.elapsed())
                .map_err(|e| format!("{}: {e}", socket.display()));
        }
        let until = Instant::now() + timeout;
        let path = match &self.health_path {
            Some(path) if self.url().scheme() == "http" => path,
            _ => return self.connect(until).map(|(_, took)| took),
        };
        let (mut stream, _) = self.connect(until)?;
        let start = Instant::now();
        self.get_health(&mut Deadline::new(&mut stream, until), path, start)
    }

    /// GETs `path` over `stream` (plain or TLS, over a [`Deadline`]): the
    /// time since `start` if it answers 2xx, or what went wrong.
    pub(crate) fn get_health(
        &self,
        stream: &mut (impl std::io::Read + std::io::Write),
        path: &str,
        start: Instant,
    ) -> Result<Duration, String> {
        let url = self.url();
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portbound-probe\r\n\
             Connection: close\r\n\r\n"
        );
        let status =
            http_status(stream, request.as_bytes()).map_err(|e| format!("GET {path}: {e}"))?;
        if (200..300).contains(&status) {
            Ok(start.elapsed())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    }

    /// Opens a TCP connection by `until`, trying each address the name
    /// resolves to in the time left (the lookup itself is the system's,
    /// unbounded here): protocol-neutral, so it works for a database or a
    /// cache alike.
    pub(crate) fn connect(&self, until: Instant) -> Result<(TcpStream, Duration), String> {
        let start = Instant::now();
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut last = String::from("no address");
        for addr in addrs {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{last}; timed out"));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => return Ok((stream, start.elapsed())),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// A probe's socket: its reads and writes share one deadline, each waiting
/// only for what is left of it, so a peer that trickles bytes cannot
/// stretch a probe (a TLS handshake is several reads) past its timeout and
/// hold up the probes of every other service.
pub(crate) struct Deadline<'a> {
    tcp: &'a mut TcpStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    pub(crate) fn new(tcp: &'a mut TcpStream, until: Instant) -> Deadline<'a> {
        Deadline { tcp, until }
    }

    fn arm(&mut self) -> std::io::Result<()> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

/// A socket's timeout is `WouldBlock` on Unix: the same deadline, said
/// the same way as [`Deadline::arm`]'s.
fn timed_out<T>(result: std::io::Result<T>) -> std::io::Result<T> {
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => std::io::ErrorKind::TimedOut.into(),
        _ => e,
    })
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        timed_out(self.tcp.read(buf))
    }
}

impl std::io::Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        timed_out(self.tcp.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// Sends `request` and reads the status code of the answer's first line.
fn http_status(
    stream: &mut (impl std::io::Read + std::io::Write),
    request: &[u8],
) -> Result<u16, String> {
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let mut got = 0;
    // "HTTP/1.1 200" is 12 bytes.
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = std::str::from_utf8(&head[..got]).unwrap_or_default();
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())
}

/// A probe of a backing service: how long it took, or what failed. Called
/// from the probes' own thread, with the probe timeout.
pub type ProbeFn = Arc<dyn Fn(Duration) -> Result<Duration, String> + Send + Sync>;

/// A [`ProbeFn`] in a `Debug` struct.
struct CustomProbe(ProbeFn);

impl std::fmt::Debug for CustomProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomProbe")
    }
}

/// The last probe result of one backing service or readiness check.
#[derive(Debug)]
struct Status {
    name: String,
    /// What `/readyz` shows as the URL (none for a readiness check).
    url: Option<String>,
    /// Probed over TCP by the background thread; `None` for a readiness
    /// check, which its own task runs.
    tcp: Option<BackingService>,
    /// A probe that replaces the TCP connect (the database's query).
    custom: std::sync::OnceLock<CustomProbe>,
    checked: AtomicBool,
    up: AtomicBool,
    latency_us: AtomicU64,
}

/// What `/readyz` and `/api/v1/info` show of one backing service or
/// readiness check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceReport {
    /// `auth` for `AUTH_SERVICE_URL`, or the name a readiness check was
    /// registered with.
    pub name: String,
    /// The URL, without credentials; none for a readiness check.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// Whether the last probe connected (or the check passed).
    pub up: bool,
    /// How long the last successful probe took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// The probe results every worker reads: the backing services, updated by
/// one background thread, then the readiness checks, updated by their task.
#[derive(Debug, Clone, Default)]
pub struct Probes(Arc<Vec<Status>>);

impl Probes {
    /// The backing services, then one slot for each readiness check, in the
    /// order given (`record_check` takes the check's index).
    pub fn new(services: &[BackingService], checks: &[String]) -> Probes {
        let status = |name: String, url: Option<String>, tcp: Option<BackingService>| Status {
            name,
            url,
            tcp,
            custom: std::sync::OnceLock::new(),
            checked: AtomicBool::new(false),
            up: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
        };
        Probes(Arc::new(
            services
                .iter()
                .map(|s| status(s.name.clone(), Some(s.display_url.clone()), Some(s.clone())))
                .chain(checks.iter().map(|name| status(name.clone(), None, None)))
                .collect(),
        ))
    }

    /// True when every service answered its last probe (and there was one).
    pub fn all_up(&self) -> bool {
        self.0.iter().all(|s| s.up.load(Ordering::Relaxed))
    }

    /// True when there is no backing service and no readiness check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last result of every backing service, then every readiness check.
    pub fn reports(&self) -> Vec<ServiceReport> {
        self.0
            .iter()
            .map(|s| {
                let up = s.up.load(Ordering::Relaxed);
                ServiceReport {
                    name: s.name.clone(),
                    url: s.url.clone(),
                    up,
                    latency_ms: up.then(|| s.latency_us.load(Ordering::Relaxed) as f64 / 1000.0),
                }
            })
            .collect()
    }

    /// Probes every backing service once over TCP, logging each change of
    /// state.
    pub fn probe_all(&self, timeout: Duration) {
        for s in self.0.iter() {
            if let Some(service) = &s.tcp {
                let result = match s.custom.get() {
                    Some(probe) => (probe.0)(timeout),
                    None => service.probe(timeout),
                };
                record(s, result);
            }
        }
    }

    /// Probes the backing service read from `variable` with `probe` instead
    /// of a TCP connect (the database pool's query). Set before
    /// [`Probes::spawn`]; a second call for the same service is ignored.
    pub fn replace_probe(&self, variable: &str, probe: ProbeFn) {
        if let Some(s) = self
            .0
            .iter()
            .find(|s| s.tcp.as_ref().is_some_and(|t| t.variable == variable))
        {
            let _ = s.custom.set(CustomProbe(probe));
        }
    }

    /// Records the outcome of the readiness check with this index (in the
    /// order given to [`Probes::new`]), logging each change of state.
    pub fn record_check(&self, index: usize, result: Result<Duration, String>) {
        if let Some(s) = self.0.iter().filter(|s| s.tcp.is_none()).nth(index) {
            record(s, result);
        }
    }

    /// Starts the background thread that probes the backing services every
    /// `interval`. A probe times out after [`probe_timeout`].
    pub fn spawn(&self, interval: Duration) {
        if !self.0.iter().any(|s| s.tcp.is_some()) {
            return;
        }
        let probes = self.clone();
        let timeout = probe_timeout(interval);
        let spawned = std::thread::Builder::new()
            .name("backing-probes".into())
            .spawn(move || {
                loop {
                    probes.probe_all(timeout);
                    std::thread::sleep(interval);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the backing-service probes: {e}");
        }
    }
}

/// How long one probe or readiness check may take: 2 s, or the interval if
/// that is shorter.
pub fn probe_timeout(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(2))
}

/// Stores one probe's outcome, logging a change of state (and the first).
fn record(s: &Status, result: Result<Duration, String>) {
    let was_up = s.up.load(Ordering::Relaxed);
    let first = !s.checked.swap(true, Ordering::Relaxed);
    let what = match &s.url {
        Some(url) => format!("backing service {} ({url})", s.name),
        None => format!("readiness check {}", s.name),
    };
    match result {
        Ok(latency) => {
            s.latency_us
                .store(latency.as_micros() as u64, Ordering::Relaxed);
            s.up.store(true, Ordering::Relaxed);
            if first || !was_up {
                log::info!("{what} is up");
            }
        }
        Err(e) => {
            s.up.store(false, Ordering::Relaxed);
            if first || was_up {
                log::warn!("{what} is down: {e}; /readyz answers 503");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hides_credentials() {
        let s = BackingService::parse(
            "AUTH_SERVICE_URL",
            "http://user:secret@auth-service:5001/v1?token=x",
        )
        .unwrap();
        assert_eq!(s.name, "auth");
        assert_eq!(s.display_url, "http://auth-service:5001/v1");
        assert!(!format!("{s:?}").contains("secret"));
        let s = BackingService::parse("PAYMENT_SERVICE_URL", "https://pay.example").unwrap();
        assert_eq!((s.name.as_str(), s.port), ("payment", 443));
    }

    #[test]
    fn database_and_cache_urls_are_services_without_their_credentials() {
        let db = BackingService::parse(
            "DATABASE_URL",
            "postgres://u8a7:p4ssw0rd@ec2-1-2-3-4.compute-1.amazonaws.com/d9f2?sslmode=require",
        )
        .unwrap();
        assert_eq!((db.name.as_str(), db.port), ("database", 5432));
        assert_eq!(
            db.display_url,
            "postgres://ec2-1-2-3-4.compute-1.amazonaws.com/d9f2"
        );
        let redis =
            BackingService::parse("REDIS_URL", "rediss://:s3cr3t@redis.internal:25061").unwrap();
        assert_eq!((redis.name.as_str(), redis.port), ("redis", 25061));
        assert_eq!(redis.display_url, "rediss://redis.internal:25061");
        for s in [&db, &redis] {
            let shown = format!("{s:?}");
            assert!(
                !shown.contains("p4ssw0rd") && !shown.contains("s3cr3t"),
                "{shown}"
            );
        }
        assert!(is_backing_variable("DATABASE_URL") && is_backing_variable("AUTH_SERVICE_URL"));
        assert!(!is_backing_variable("RENDER_EXTERNAL_URL"));
        // A unix-socket URL has nothing to probe over TCP.
        assert!(BackingService::parse("DATABASE_URL", "postgres:///app").is_err());
    }

    #[test]
    fn credentials_are_redacted_from_values_shown_in_errors() {
        assert_eq!(
            redact_credentials("postgres://u:hun@ter2@db:x/app"),
            "postgres://REDACTED@db:x/app"
        );
        assert_eq!(
            redact_credentials("redis://:pw@r:6379"),
            "redis://REDACTED@r:6379"
        );
        assert_eq!(redact_credentials("http://a/b@c"), "http://a/b@c");
        assert_eq!(redact_credentials("auth:5001"), "auth:5001");
    }

    #[test]
    fn rejects_what_is_not_a_url_with_a_port() {
        for bad in ["auth:5001", "not a url", "http://", "unknown-scheme://host"] {
            assert!(
                BackingService::parse("AUTH_SERVICE_URL", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_postgres_unix_socket_is_probed_at_its_socket_file() {
        let dir = std::env::temp_dir().join(format!("portbound-pg-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!(
            "postgres://app:hunter2@/app?host={}&port=6543",
            dir.display()
        );
        let svc = BackingService::parse("DATABASE_URL", &url).unwrap();
        assert_eq!(svc.name, "database");
        assert!(!svc.display_url.contains("hunter2"), "{}", svc.display_url);
        assert!(
            svc.probe(Duration::from_millis(200)).is_err(),
            "nothing listens yet"
        );
        let listener = std::os::unix::net::UnixListener::bind(dir.join(".s.PGSQL.6543")).unwrap();
        assert!(svc.probe(Duration::from_millis(200)).is_ok());
        assert_eq!(
            with_placeholder_host("postgres:///app?host=/run"),
            "postgres://localhost/app?host=/run"
        );
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A listener that answers every connection with `status` once read.
    fn answering(status: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, thread)
    }

    #[test]
    fn an_http_service_is_probed_by_a_get_of_its_health_path() {
        let (port, asked) = answering("200 OK");
        let mut svc =
            BackingService::parse("AUTH_SERVICE_URL", &format!("http://127.0.0.1:{port}/api"))
                .unwrap();
        assert_eq!(svc.health_path(), Some("/healthz"));
        svc.probe(Duration::from_secs(2)).unwrap();
        assert!(
            asked
                .join()
                .unwrap()
                .starts_with("GET /healthz HTTP/1.1\r\n")
        );

        // Listening is not enough: a 503 (draining, broken) is down.
        let (port, asked) = answering("503 Service Unavailable");
        svc =
            BackingService::parse("AUTH_SERVICE_URL", &format!("http://127.0.0.1:{port}")).unwrap();
        svc.set_health_path(Some("/ready".into()));
        let err = svc.probe(Duration::from_secs(2)).unwrap_err();
        assert!(err.contains("GET /ready answered 503"), "{err}");
        assert!(asked.join().unwrap().starts_with("GET /ready HTTP/1.1"));

        // `none`: a TCP connect, and nothing sent.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        svc =
            BackingService::parse("PAY_SERVICE_URL", &format!("http://127.0.0.1:{port}")).unwrap();
        svc.set_health_path(None);
        assert_eq!(svc.health_path(), None);
        svc.probe(Duration::from_secs(2)).unwrap();
        assert_sent_nothing(&listener);

        // A database or a cache: the TCP connect.
        for (var, url) in [
            ("DATABASE_URL", "postgres://u:p@db:5432/app"),
            ("CACHE_SERVICE_URL", "redis://cache:6379"),
        ] {
            assert_eq!(
                BackingService::parse(var, url).unwrap().health_path(),
                None,
                "{var}"
            );
        }
        // https has a health path, for the GET over TLS the `upstreams`
        // feature sends; this probe alone speaks no TLS, so it connects
        // only, and sends no plain-text GET to a TLS port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let svc =
            BackingService::parse("PAY_SERVICE_URL", &format!("https://127.0.0.1:{port}")).unwrap();
        assert_eq!(svc.health_path(), Some("/healthz"));
        svc.probe(Duration::from_secs(2)).unwrap();
        assert_sent_nothing(&listener);
    }

    /// The probe that connected to `listener` sent nothing and closed.
    fn assert_sent_nothing(listener: &std::net::TcpListener) {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(std::io::Read::read(&mut conn, &mut buf), Ok(0)),
            "the TCP probe sent nothing and closed"
        );
    }

    #[test]
    fn probes_report_up_and_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // tcp://: the connect probe (http:// would GET /healthz).
        let svc =
            BackingService::parse("A_SERVICE_URL", &format!("tcp://127.0.0.1:{port}")).unwrap();
        let probes = Probes::new(&[svc], &["own".to_owned()]);
        assert!(!probes.all_up(), "not up before the first probe");
        probes.probe_all(Duration::from_secs(1));
        assert!(probes.reports()[0].up);
        assert!(!probes.all_up(), "not up before the check's first run");
        probes.record_check(0, Ok(Duration::from_millis(3)));
        assert!(probes.all_up());
        assert!(probes.reports()[0].latency_ms.is_some());
        drop(listener);
        probes.probe_all(Duration::from_secs(1));
        assert!(!probes.all_up());
        assert_eq!(probes.reports()[0].latency_ms, None);
        // A readiness check's slot follows the services', and has no URL.
        assert_eq!(probes.reports()[1].name, "own");
        assert_eq!(probes.reports()[1].url, None);
        assert!(probes.reports()[1].up);
        probes.record_check(0, Err("no".into()));
        assert!(!probes.reports()[1].up);
    }
}
