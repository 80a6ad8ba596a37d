//! The one typed `Config`, read once at start from the environment (and
//! `.env`). Nothing else in the crate reads the environment.
//!
//! Every problem is collected before giving up, so one failed deploy shows
//! every bad variable at once, each with the value seen and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::backing::{self, BackingService};
use crate::platform::{InstanceFacts, LogFormat, Platform, parse_cidrs};

/// The port used when `PORT` is unset: the 12-factor article's, and Flask's.
pub const DEFAULT_PORT: u16 = 5000;
/// actix-web's own ceiling on workers.
pub const MAX_WORKERS: usize = 512;
/// Longer than every router's idle timeout (Heroku 90 s, Railway 60 s, nginx
/// 60 s), so the router, not us, closes idle connections: a server that closes
/// first races the router's next request on that connection, and the user
/// sees a sporadic 502.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 95;
/// Every variable the service reads (besides the platforms' own markers and
/// any `*_SERVICE_URL`). The manifests' tests check each manifest against it,
/// and that `.env.example` documents each one.
pub const VARIABLES: &[&str] = &[
    "PORT",
    "HOST",
    "WEB_CONCURRENCY",
    "SHUTDOWN_TIMEOUT",
    "SHUTDOWN_DELAY",
    "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
    "KEEP_ALIVE",
    "RUST_LOG",
    "LOG_FORMAT",
    "TRUSTED_PROXIES",
    "FORCE_HTTPS",
    "METRICS_PORT",
    "SERVICE_PROBE_INTERVAL",
    "MAX_BODY_BYTES",
    "REQUEST_TIMEOUT",
    "DOCS_ENABLED",
    "CORS_ALLOWED_ORIGINS",
    "UNIX_SOCKET",
    "UNIX_SOCKET_MODE",
    "HTTP2",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "GOOGLE_CLOUD_PROJECT",
    "DATABASE_POOL_SIZE",
    "DATABASE_ACQUIRE_TIMEOUT",
    "DATABASE_DIRECT_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "MAX_CONCURRENT_REQUESTS",
    "RATE_LIMIT",
    "PORTBOUND_TEST_MIGRATIONS",
    "PORTBOUND_TEST_ROUTES",
];

/// Default limit on a request body. The API's largest body (an echo of 1000
/// four-byte characters) is under 5 KiB; 64 KiB leaves room and still stops a
/// client from making a worker buffer megabytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default bound on a whole request, body included (actix bounds only the
/// head): long enough for any honest client of this API, short enough that a
/// client dripping a body cannot hold a connection for long.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// How often backing services are probed by default.
pub const DEFAULT_PROBE_INTERVAL_SECS: u64 = 5;

/// Connections the database pool may open (`DATABASE_POOL_SIZE`). The
/// smallest plans share few connections among every process: Heroku
/// Postgres Essential-0 allows 20 for all dynos and the release dyno
/// together (<https://devcenter.heroku.com/articles/heroku-postgres-plans>;
/// that page could not be read from this project's build machines, so the
/// figure is the one heroku `pg:info` reports for the plan, as third-party
/// write-ups quote it, and should be re-checked there). Five leaves room for three web dynos, the release phase and a console.
/// One pool serves every worker (`database.rs` says why), so this is the
/// process's total.
pub const DEFAULT_DATABASE_POOL_SIZE: u32 = 5;
/// How long a request waits for a pooled connection before it is answered
/// 503 (`DATABASE_ACQUIRE_TIMEOUT`): long enough to ride out a burst on a
/// full pool, far shorter than `REQUEST_TIMEOUT` and any router's patience,
/// so a database that is down fails fast instead of holding requests.
pub const DEFAULT_DATABASE_ACQUIRE_TIMEOUT_SECS: u64 = 2;

/// `DATABASE_URL` when it names PostgreSQL, with the pool's settings. Its
/// `Debug` never shows the URL, which holds the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    url: String,
    direct_url: Option<String>,
    /// Most connections the pool opens (`DATABASE_POOL_SIZE`).
    pub pool_size: u32,
    /// Longest wait for a connection (`DATABASE_ACQUIRE_TIMEOUT`).
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    /// The URL, credentials included: for the connection only, never a log.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `DATABASE_DIRECT_URL`: the database itself, not a transaction-mode
    /// pooler, for `migrate` (its advisory lock needs a session).
    pub fn direct_url(&self) -> Option<&str> {
        self.direct_url.as_deref()
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"<DATABASE_URL, redacted>")
            .field(
                "direct_url",
                &self.direct_url.as_ref().map(|_| "<redacted>"),
            )
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// Upper bound on every duration variable: an hour is already absurd here.
const MAX_SECONDS: u64 = 3600;

/// The environment as the process sees it: `.env` first, then the real
/// environment on top, so a variable the platform sets always wins.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Names whose value is not valid UTF-8 (reported only if we read them).
    not_unicode: Vec<String>,
}

impl Env {
    /// Reads `.env` from the working directory, if there is one, then the
    /// process environment. A missing `.env` is normal; a malformed one is an
    /// error that names the line.
    pub fn load() -> Result<Env, ConfigError> {
        let mut env = Env::default();
        env.merge_dotenv(Path::new(".env"))?;
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    env.vars.insert(name, value);
                }
                Err(_) => env.not_unicode.push(name),
            }
        }
        Ok(env)
    }

    /// An environment made of exactly these pairs (for tests and tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            not_unicode: Vec::new(),
        }
    }

    fn merge_dotenv(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ConfigError::single(
                    ".env",
                    path.display().to_string(),
                    format!("a readable file ({e})"),
                ));
            }
        };
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((name, value)) => {
                    self.vars.insert(name, value);
                }
                Err(dotenvy::Error::LineParse(line, _)) => {
                    let number = text
                        .lines()
                        .position(|l| l.contains(line.trim()))
                        .map_or(0, |i| i + 1);
                    return Err(ConfigError::single(
                        ".env",
                        format!("line {number}: {}", line.trim()),
                        "lines of the form NAME=value (or comments starting with #)",
                    ));
                }
                Err(e) => {
                    return Err(ConfigError::single(
                        ".env",
                        path.display().to_string(),
                        format!("a valid dotenv file ({e})"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Every variable name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
}

/// One bad variable: its name, the value seen and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable, as named in the environment.
    pub variable: String,
    /// The value seen (a URL's credentials redacted).
    pub value: String,
    /// What the variable takes.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

/// Every problem found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Every problem found, in the order the variables are read.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    fn single(variable: &str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                variable: variable.to_owned(),
                value: value.into(),
                expected: expected.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}), nothing was started:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Everything the service needs to know, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The address to bind. `::` is dual-stack on Linux.
    pub host: IpAddr,
    /// True when `HOST` was not set: only then may we fall back to `0.0.0.0`
    /// on a machine without IPv6.
    pub host_is_default: bool,
    /// `0` lets the OS pick; the bound port is logged.
    pub port: u16,
    /// True when `PORT` was set: with `UNIX_SOCKET`, TCP is served only then.
    pub port_is_explicit: bool,
    /// Listening sockets inherited from systemd or systemfd (`LISTEN_FDS`,
    /// for this process per `LISTEN_PID`): served instead of `PORT`.
    pub inherited_fds: Vec<i32>,
    /// Their names (`LISTEN_FDNAMES`), for the log.
    pub inherited_fd_names: Vec<String>,
    /// A unix socket to serve on (`UNIX_SOCKET`), beside or instead of TCP.
    pub unix_socket: Option<std::path::PathBuf>,
    /// Its permissions (`UNIX_SOCKET_MODE`, octal).
    pub unix_socket_mode: u32,
    /// Accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 (`HTTP2`).
    pub http2: bool,
    /// Worker threads (`WEB_CONCURRENCY`).
    pub workers: usize,
    /// Time in-flight requests get to finish after the stop signal.
    pub shutdown_timeout: Duration,
    /// Time we keep serving, with `/readyz` at 503, before closing the listener.
    pub shutdown_delay: Duration,
    /// Idle keep-alive; `Duration::ZERO` disables keep-alive.
    pub keep_alive: Duration,
    /// The `RUST_LOG` filter.
    pub log_filter: String,
    /// The platform we detected.
    pub platform: Platform,
    /// What the platform told us about this instance.
    pub instance: InstanceFacts,
    /// The format of every log line, access log included.
    pub log_format: LogFormat,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Redirect plain-http requests that came through a trusted proxy to
    /// https, and send `Strict-Transport-Security`.
    pub force_https: bool,
    /// A second listener serving Prometheus metrics, when set.
    pub metrics_port: Option<u16>,
    /// Every `*_SERVICE_URL`, `DATABASE_URL` and `REDIS_URL`, in name order.
    pub services: Vec<BackingService>,
    /// How often backing services are probed.
    pub service_probe_interval: Duration,
    /// `DATABASE_URL`, when it names PostgreSQL (`postgres://`,
    /// `postgresql://`), and the pool's settings. With the `postgres`
    /// feature the runtime opens a pool on it; without, it is probed over
    /// TCP like any backing service.
    pub database: Option<DatabaseSettings>,
    /// Where and how traces are exported (`OTEL_*`, the `otel` feature);
    /// `None`: no endpoint, or `OTEL_SDK_DISABLED=true`.
    #[cfg(feature = "otel")]
    pub otel: Option<crate::telemetry::otel::OtelSettings>,
    /// `MAX_CONCURRENT_REQUESTS`: a fixed limit on the requests the
    /// service's routes run at once; `None`: the adaptive limit
    /// ([`crate::overload`]).
    pub max_concurrent_requests: Option<usize>,
    /// `RATE_LIMIT`: requests a client address may send (`20/s`), per
    /// instance; `None`: no rate limit (the default).
    pub rate_limit: Option<crate::overload::RateSetting>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Bound on a whole request, body included; zero disables it.
    pub request_timeout: Duration,
    /// Serve Swagger UI and the spec.
    pub docs_enabled: bool,
    /// Origins allowed to call the API from a browser; empty: CORS is off.
    /// `*` allows any origin (without credentials).
    pub cors_allowed_origins: Vec<String>,
    /// The Google Cloud project, for Cloud Logging's trace field.
    pub google_cloud_project: Option<String>,
    /// Test-only routes (a slow endpoint for the drain tests). Never set it in
    /// production.
    pub test_routes: bool,
    /// Test-only: a folder of migrations `migrate` reads at run time
    /// (`PORTBOUND_TEST_MIGRATIONS`, honoured only with the test routes).
    pub test_migrations: Option<std::path::PathBuf>,
    /// Settings that are valid but will hurt on this platform, each a whole
    /// sentence naming the variable and what to set. Logged once at start.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads `.env` and the environment and validates them.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&Env::load()?)
    }

    /// Validates an environment, reporting every problem at once.
    pub fn from_vars(env: &Env) -> Result<Config, ConfigError> {
        let mut r = Reader {
            env,
            problems: Vec::new(),
        };
        for name in &env.not_unicode {
            r.problem(name, "<not UTF-8>", "a UTF-8 value");
        }

        let names: Vec<String> = env.names().map(str::to_owned).collect();
        let platform = Platform::detect(|n| env.get(n).map(str::to_owned), &names);
        let railway_draining = r.parse_opt("RAILWAY_DEPLOYMENT_DRAINING_SECONDS", |v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s <= MAX_SECONDS)
                .ok_or_else(|| format!("whole seconds from 0 to {MAX_SECONDS}"))
        });
        let defaults = platform.defaults(railway_draining);
        let mut warnings = Vec::new();
        // Railway's draining time is a variable the service sets itself, not
        // one Railway injects ("user-provided configuration" in
        // https://docs.railway.com/reference/variables), and it defaults to 0.
        if platform == Platform::Railway && railway_draining.unwrap_or(0) == 0 {
            warnings.push(format!(
                "RAILWAY_DEPLOYMENT_DRAINING_SECONDS is {}: Railway sends SIGKILL right after \
                 SIGTERM, so in-flight requests will be cut instead of drained; set the service \
                 variable RAILWAY_DEPLOYMENT_DRAINING_SECONDS=30 (.railway/railway.ts does)",
                match env.get("RAILWAY_DEPLOYMENT_DRAINING_SECONDS") {
                    Some(v) if !v.trim().is_empty() => format!("{v:?}"),
                    _ => "not set".to_owned(),
                }
            ));
        }

        let host = r.parse_opt("HOST", parse_host);
        let port = r
            .parse_opt("PORT", |v| {
                v.parse::<u16>().map_err(|_| {
                    "a whole number from 0 to 65535 (0 lets the OS pick a free port)".into()
                })
            })
            .unwrap_or(DEFAULT_PORT);
        let port_is_explicit = env.get("PORT").is_some_and(|v| !v.trim().is_empty());
        let inherited_fds = inherited_fds(&mut r);
        let inherited_fd_names = env
            .get("LISTEN_FDNAMES")
            .map(|v| v.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let unix_socket = env
            .get("UNIX_SOCKET")
            .filter(|v| !v.trim().is_empty())
            .map(std::path::PathBuf::from);
        let unix_socket_mode = r
            .parse_opt("UNIX_SOCKET_MODE", |v| {
                u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| "octal permissions such as 660 or 600".into())
            })
            .unwrap_or(0o660);
        let http2 = r.boolean("HTTP2").unwrap_or(false);
        let workers = r
            .parse_opt("WEB_CONCURRENCY", |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| format!("a whole number of workers from 1 to {MAX_WORKERS}"))
            })
            .unwrap_or_else(default_workers);
        let shutdown_timeout = r
            .seconds("SHUTDOWN_TIMEOUT")
            .unwrap_or(Duration::from_secs(defaults.shutdown_timeout_secs));
        let shutdown_delay = r
            .seconds("SHUTDOWN_DELAY")
            .unwrap_or(Duration::from_secs(defaults.shutdown_delay_secs));
        let keep_alive = r
            .seconds("KEEP_ALIVE")
            .unwrap_or(Duration::from_secs(DEFAULT_KEEP_ALIVE_SECS));
        let log_filter = env
            .get("RUST_LOG")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or("info")
            .to_owned();
        let log_format = r
            .parse_opt("LOG_FORMAT", |v| {
                LogFormat::parse(v).ok_or_else(|| "text, logfmt or json".into())
            })
            .unwrap_or(defaults.log_format);
        let trusted_proxies = r
            .parse_opt("TRUSTED_PROXIES", |v| {
                parse_cidrs(v).map_err(|bad| {
                    format!(
                        "a list of CIDRs or addresses separated by commas, such as                          10.0.0.0/8,::1 ({bad:?} is not one)"
                    )
                })
            })
            .unwrap_or_else(|| {
                parse_cidrs(defaults.trusted_proxies).expect("the defaults table parses")
            });
        let force_https = r.boolean("FORCE_HTTPS").unwrap_or(false);
        let metrics_port = r.parse_opt("METRICS_PORT", |v| {
            v.parse::<u16>()
                .map_err(|_| "a whole number from 0 to 65535, other than PORT".into())
        });
        if let Some(mp) = metrics_port
            && mp != 0
            && mp == port
        {
            r.problem(
                "METRICS_PORT",
                &mp.to_string(),
                "a port other than PORT: metrics must not be reachable through the main port",
            );
        }
        let mut services = Vec::new();
        for name in env.names().filter(|n| backing::is_backing_variable(n)) {
            let raw = env.get(name).unwrap_or_default().trim();
            if raw.is_empty() {
                continue;
            }
            match BackingService::parse(name, raw) {
                Ok(mut svc) => {
                    if let Some(prefix) = name.strip_suffix(backing::SUFFIX) {
                        read_upstream_settings(&mut r, prefix, &mut svc);
                    }
                    services.push(svc)
                }
                // The value may hold a password: shown without it.
                Err(expected) => r.problem(name, &backing::redact_credentials(raw), &expected),
            }
        }
        // A setting of an upstream that is not there is a typo or a leftover.
        for name in env.names().filter(|n| backing::is_service_setting(n)) {
            let prefix = backing::SETTINGS
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or_default();
            let url = format!("{prefix}{}", backing::SUFFIX);
            if !services.iter().any(|s| s.variable == url) {
                let value = env.get(name).unwrap_or_default().to_owned();
                r.problem(
                    name,
                    &value,
                    &format!("{url} to be set too: this is a setting of that upstream"),
                );
            }
        }
        #[cfg(feature = "otel")]
        let otel = match crate::telemetry::otel::settings(|k| env.get(k).map(str::to_owned)) {
            Ok(settings) => settings,
            Err(problems) => {
                for (variable, value, expected) in problems {
                    r.problem(&variable, &value, &expected);
                }
                None
            }
        };
        let max_concurrent_requests = r
            .parse_opt("MAX_CONCURRENT_REQUESTS", |v| {
                if v.eq_ignore_ascii_case("auto") {
                    return Ok(None);
                }
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        "auto (the adaptive limit, the default), or a number of requests \
                         from 1 to 100000"
                            .into()
                    })
            })
            .flatten();
        let rate_limit = r.parse_opt("RATE_LIMIT", crate::overload::RateSetting::parse);
        let pool_size = r
            .parse_opt("DATABASE_POOL_SIZE", |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        "a number of connections from 1 to 100 (the database's own limit is \
                         shared by every process)"
                            .into()
                    })
            })
            .unwrap_or(DEFAULT_DATABASE_POOL_SIZE);
        let acquire_timeout = r
            .parse_opt("DATABASE_ACQUIRE_TIMEOUT", |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|s| (1..=60).contains(s))
                    .map(Duration::from_secs)
                    .ok_or_else(|| "whole seconds from 1 to 60".into())
            })
            .unwrap_or(Duration::from_secs(DEFAULT_DATABASE_ACQUIRE_TIMEOUT_SECS));
        let is_postgres = |v: &&str| v.starts_with("postgres://") || v.starts_with("postgresql://");
        let direct_url = env
            .get("DATABASE_DIRECT_URL")
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if let Some(v) = direct_url
            && !is_postgres(&v)
        {
            r.problem(
                "DATABASE_DIRECT_URL",
                &backing::redact_credentials(v),
                "a PostgreSQL URL (postgres://user:password@host:5432/db) that reaches the \
                 database itself, not a transaction-mode pooler",
            );
        }
        let database = env
            .get("DATABASE_URL")
            .map(str::trim)
            .filter(is_postgres)
            .map(|url| DatabaseSettings {
                url: url.to_owned(),
                direct_url: direct_url.filter(is_postgres).map(str::to_owned),
                pool_size,
                acquire_timeout,
            });
        // With the driver compiled in, the URL must be one it can use (an
        // unknown sslmode, say): refused now, with exit 78, not at the first
        // query.
        #[cfg(feature = "postgres")]
        if let Some(settings) = &database
            && let Err(e) = crate::database::connect_options(settings.url(), platform)
        {
            r.problem(
                "DATABASE_URL",
                &backing::redact_credentials(settings.url()),
                &format!(
                    "a PostgreSQL URL sqlx accepts, such as \
                     postgres://user:password@host:5432/db?sslmode=require ({e})"
                ),
            );
        }
        let service_probe_interval = r
            .seconds("SERVICE_PROBE_INTERVAL")
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(DEFAULT_PROBE_INTERVAL_SECS));
        let max_body_bytes = r
            .parse_opt("MAX_BODY_BYTES", |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64 * 1024 * 1024).contains(n))
                    .ok_or_else(|| "a number of bytes from 1 to 67108864 (64 MiB)".into())
            })
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let request_timeout = r
            .seconds("REQUEST_TIMEOUT")
            .unwrap_or(Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS));
        let docs_enabled = r.boolean("DOCS_ENABLED").unwrap_or(true);
        let cors_allowed_origins = r
            .parse_opt("CORS_ALLOWED_ORIGINS", parse_origins)
            .unwrap_or_default();
        let google_cloud_project = env
            .get("GOOGLE_CLOUD_PROJECT")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let test_routes = r.boolean("PORTBOUND_TEST_ROUTES").unwrap_or(false);
        // Only with the test routes: a test's migrations, read from a folder
        // at run time instead of those embedded in the binary.
        let test_migrations = env
            .get("PORTBOUND_TEST_MIGRATIONS")
            .filter(|v| test_routes && !v.is_empty())
            .map(std::path::PathBuf::from);

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Config {
            host_is_default: host.is_none(),
            host: host.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            port,
            port_is_explicit,
            inherited_fds,
            inherited_fd_names,
            unix_socket,
            unix_socket_mode,
            http2,
            workers,
            shutdown_timeout,
            shutdown_delay,
            keep_alive,
            log_filter,
            platform,
            instance: InstanceFacts::detect(platform, |n| env.get(n).map(str::to_owned)),
            log_format,
            trusted_proxies,
            force_https,
            metrics_port,
            services,
            max_concurrent_requests,
            rate_limit,
            #[cfg(feature = "otel")]
            otel,
            service_probe_interval,
            database,
            max_body_bytes,
            request_timeout,
            docs_enabled,
            cors_allowed_origins,
            google_cloud_project,
            test_routes,
            test_migrations,
            warnings,
        })
    }

    /// A configuration for tests and embedding: loopback, an OS-picked port,
    /// one worker, short drains, no platform.
    pub fn for_tests() -> Config {
        Config::from_vars(&Env::from_pairs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("WEB_CONCURRENCY", "1"),
            ("SHUTDOWN_TIMEOUT", "5"),
            ("LOG_FORMAT", "text"),
        ]))
        .expect("the test configuration is valid")
    }
}

impl Config {
    /// Whether to bind `HOST`:`PORT`: always, unless only a unix socket was
    /// asked for (`UNIX_SOCKET` set and `PORT` not).
    pub fn serve_tcp(&self) -> bool {
        self.unix_socket.is_none() || self.port_is_explicit
    }
}

/// systemd's socket-activation protocol: `LISTEN_FDS` sockets from fd 3,
/// meant for us when `LISTEN_PID` is our pid or (systemfd `--no-pid`) unset.
fn inherited_fds(r: &mut Reader<'_>) -> Vec<i32> {
    /// SD_LISTEN_FDS_START in sd-daemon.h.
    const FIRST_FD: i32 = 3;
    let count = r.parse_opt("LISTEN_FDS", |v| {
        v.parse::<i32>()
            .ok()
            .filter(|n| (0..=64).contains(n))
            .ok_or_else(|| "a count of inherited sockets from 0 to 64".into())
    });
    let pid = r.parse_opt("LISTEN_PID", |v| {
        v.parse::<u32>()
            .map_err(|_| "the process id the sockets are meant for".into())
    });
    match (count, pid) {
        (Some(n), Some(pid)) if pid == std::process::id() => (FIRST_FD..FIRST_FD + n).collect(),
        (Some(n), None) => (FIRST_FD..FIRST_FD + n).collect(),
        // Meant for another process (a parent that did not clear them).
        _ => Vec::new(),
    }
}

/// One worker per core the process may use: `available_parallelism` reads the
/// cgroup CPU quota, so a container limited to 2 CPUs gets 2, not the host's.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_WORKERS)
}

fn parse_host(v: &str) -> Result<IpAddr, String> {
    let trimmed = v.trim_start_matches('[').trim_end_matches(']');
    if trimmed.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    trimmed.parse::<IpAddr>().map_err(|_| {
        "an IP address: :: (every interface, IPv4 and IPv6), 0.0.0.0 (every IPv4 \
         interface) or 127.0.0.1 (this machine only)"
            .into()
    })
}

/// `*`, or origins (`scheme://host[:port]`, no path) separated by commas.
fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    let expected = |bad: &str| {
        format!(
            "* or origins such as https://app.example.com,http://localhost:3000 \
             separated by commas ({bad:?} is not an origin)"
        )
    };
    v.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            if o == "*" {
                return Ok(o.to_owned());
            }
            let url = url::Url::parse(o).map_err(|_| expected(o))?;
            let origin = url.origin().ascii_serialization();
            if origin == "null" || origin != o.trim_end_matches('/') {
                return Err(expected(o));
            }
            Ok(origin)
        })
        .collect()
}

/// `PREFIX_SERVICE_TIMEOUT`, `_RETRIES`, `_RETRY_BUDGET`, `_BREAKER` and
/// `_HEALTH_PATH` of one upstream, into its limits.
fn read_upstream_settings(r: &mut Reader<'_>, prefix: &str, svc: &mut BackingService) {
    let var = |suffix: &str| format!("{prefix}{suffix}");
    if let Some(timeout) = r.parse_opt(&var("_SERVICE_TIMEOUT"), |v| {
        v.parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.01 && *s <= 300.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "seconds from 0.01 to 300 for one attempt".into())
    }) {
        svc.limits.timeout = timeout;
    }
    if let Some(retries) = r.parse_opt(&var("_SERVICE_RETRIES"), |v| {
        v.parse::<u32>()
            .ok()
            .filter(|n| *n <= 5)
            .ok_or_else(|| "a number of retries from 0 to 5".into())
    }) {
        svc.limits.retries = retries;
    }
    if let Some(budget) = r.parse_opt(&var("_SERVICE_RETRY_BUDGET"), |v| {
        v.parse::<f64>()
            .ok()
            .filter(|b| (0.0..=1.0).contains(b))
            .ok_or_else(|| "the share of calls retries may add, from 0 to 1 (0.1 is 10 %)".into())
    }) {
        svc.limits.retry_budget = budget;
    }
    if let Some(breaker) = r.parse_opt(&var("_SERVICE_BREAKER"), backing::BreakerLimits::parse) {
        svc.limits.breaker = breaker;
    }
    if let Some(path) = r.parse_opt(&var("_SERVICE_HEALTH_PATH"), |v| {
        if v.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        (v.starts_with('/') && !v.contains(char::is_whitespace))
            .then(|| Some(v.to_owned()))
            .ok_or_else(|| "an absolute path such as /healthz, or none (a TCP connect only)".into())
    }) {
        svc.set_health_path(path);
    }
}

/// Collects problems while reading variables.
struct Reader<'a> {
    env: &'a Env,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, variable: &str, value: &str, expected: &str) {
        self.problems.push(Problem {
            variable: variable.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        });
    }

    /// Parses `name` if it is set and not empty; records a problem if the
    /// parser rejects it.
    fn parse_opt<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.env.get(name)?;
        let value = raw.trim();
        if value.is_empty() {
            return None;
        }
        match parse(value) {
            Ok(v) => Some(v),
            Err(expected) => {
                self.problem(name, raw, &expected);
                None
            }
        }
    }

    fn seconds(&mut self, name: &str) -> Option<Duration> {
        self.parse_opt(name, |v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s <= MAX_SECONDS)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("whole seconds from 0 to {MAX_SECONDS}"))
        })
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        self.parse_opt(name, |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("true or false (also 1/0, yes/no, on/off)".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn an_upstreams_health_path_is_a_path_or_none() {
        let path = |value: Option<&str>| {
            let mut pairs = vec![("PAY_SERVICE_URL", "https://pay.example")];
            pairs.extend(value.map(|v| ("PAY_SERVICE_HEALTH_PATH", v)));
            config(&pairs).map(|c| c.services[0].health_path().map(str::to_owned))
        };
        assert_eq!(path(None).unwrap().as_deref(), Some("/healthz"));
        assert_eq!(path(Some("/ready")).unwrap().as_deref(), Some("/ready"));
        assert_eq!(path(Some("none")).unwrap(), None);
        assert_eq!(path(Some("None")).unwrap(), None);
        let err = path(Some("ready")).unwrap_err().to_string();
        assert!(
            err.contains("PAY_SERVICE_HEALTH_PATH") && err.contains("none"),
            "{err}"
        );
    }

    #[test]
    fn defaults_follow_the_issue_and_the_platform_table() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.host, "::".parse::<IpAddr>().unwrap());
        assert!(c.host_is_default);
        assert_eq!(c.keep_alive, Duration::from_secs(95));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.platform, Platform::Local);
        assert!(c.workers >= 1);
        assert!(!c.test_routes);
        assert!(c.inherited_fds.is_empty());
        assert!(c.serve_tcp());
        assert!(!c.http2);

        let run = config(&[("K_SERVICE", "pb")]).unwrap();
        assert_eq!(run.shutdown_timeout, Duration::from_secs(8));
        let k8s = config(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]).unwrap();
        assert_eq!(k8s.shutdown_delay, Duration::from_secs(5));
        let railway = config(&[
            ("RAILWAY_SERVICE_NAME", "pb"),
            ("RAILWAY_DEPLOYMENT_DRAINING_SECONDS", "60"),
        ])
        .unwrap();
        assert_eq!(railway.shutdown_timeout, Duration::from_secs(55));
        assert!(railway.warnings.is_empty(), "{:?}", railway.warnings);
    }

    #[test]
    fn railway_without_a_draining_time_is_warned_about_once() {
        for draining in [None, Some("0")] {
            let mut vars = vec![("RAILWAY_SERVICE_NAME", "pb")];
            vars.extend(draining.map(|v| ("RAILWAY_DEPLOYMENT_DRAINING_SECONDS", v)));
            let c = config(&vars).unwrap();
            assert_eq!(c.warnings.len(), 1, "{draining:?}: {:?}", c.warnings);
            let w = &c.warnings[0];
            assert!(
                w.starts_with("RAILWAY_DEPLOYMENT_DRAINING_SECONDS is "),
                "{w}"
            );
            assert!(w.contains("SIGKILL right after SIGTERM"), "{w}");
            assert!(w.contains("RAILWAY_DEPLOYMENT_DRAINING_SECONDS=30"), "{w}");
        }
        // Elsewhere the variable means nothing, so its absence is no warning.
        assert!(config(&[]).unwrap().warnings.is_empty());
        assert!(config(&[("DYNO", "web.1")]).unwrap().warnings.is_empty());
    }

    #[test]
    fn explicit_values_win() {
        let c = config(&[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("WEB_CONCURRENCY", "3"),
            ("SHUTDOWN_TIMEOUT", "2"),
            ("SHUTDOWN_DELAY", "1"),
            ("KEEP_ALIVE", "0"),
            ("DYNO", "web.1"),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert!(!c.host_is_default);
        assert_eq!(c.workers, 3);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(c.shutdown_delay, Duration::from_secs(1));
        assert_eq!(c.keep_alive, Duration::ZERO);
        assert_eq!(c.platform, Platform::Heroku);
        assert_eq!(c.instance.instance.as_deref(), Some("web.1"));
        assert_eq!(c.log_filter, "debug");
    }

    #[test]
    fn host_accepts_brackets_and_localhost() {
        assert_eq!(
            config(&[("HOST", "[::1]")]).unwrap().host,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            config(&[("HOST", "localhost")]).unwrap().host,
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = config(&[
            ("PORT", "abc"),
            ("WEB_CONCURRENCY", "0"),
            ("HOST", "nonsense"),
            ("SHUTDOWN_TIMEOUT", "-1"),
            ("KEEP_ALIVE", "forever"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "HOST",
                "PORT",
                "WEB_CONCURRENCY",
                "SHUTDOWN_TIMEOUT",
                "KEEP_ALIVE"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("5 problems"), "{text}");
        assert!(
            text.contains(r#"PORT="abc": expected a whole number from 0 to 65535"#),
            "{text}"
        );
        assert!(text.contains(r#"WEB_CONCURRENCY="0": expected"#), "{text}");
        assert!(
            text.contains(r#"HOST="nonsense": expected an IP address"#),
            "{text}"
        );
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for (name, value) in [
            ("PORT", "70000"),
            ("PORT", "-1"),
            ("WEB_CONCURRENCY", "513"),
            ("SHUTDOWN_DELAY", "3601"),
            ("PORTBOUND_TEST_ROUTES", "maybe"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{name}={value}");
            assert_eq!(err.problems[0].variable, name);
            assert_eq!(err.problems[0].value, value);
        }
    }

    #[test]
    fn observability_settings_follow_the_platform() {
        let local = config(&[]).unwrap();
        assert_eq!(local.log_format, LogFormat::Text);
        assert!(local.trusted_proxies.iter().all(|n| n.addr().is_loopback()));
        assert_eq!(local.metrics_port, None);
        let run = config(&[("K_SERVICE", "pb")]).unwrap();
        assert_eq!(run.log_format, LogFormat::Json);
        let heroku = config(&[("DYNO", "web.1"), ("LOG_FORMAT", "json")]).unwrap();
        assert_eq!(heroku.log_format, LogFormat::Json, "explicit wins");
        let c = config(&[
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"),
            ("METRICS_PORT", "9091"),
            ("AUTH_SERVICE_URL", "http://auth:5001"),
            ("PAYMENT_SERVICE_URL", "http://pay:5002"),
        ])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.metrics_port, Some(9091));
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["auth", "payment"]);
    }

    #[test]
    fn bad_observability_settings_are_rejected() {
        let err = config(&[
            ("LOG_FORMAT", "xml"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,nope"),
            ("PORT", "9091"),
            ("METRICS_PORT", "9091"),
            ("AUTH_SERVICE_URL", "auth:5001"),
            ("MAX_BODY_BYTES", "0"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://ok.example,https://bad.example/path",
            ),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        for v in [
            "LOG_FORMAT",
            "TRUSTED_PROXIES",
            "METRICS_PORT",
            "AUTH_SERVICE_URL",
            "MAX_BODY_BYTES",
        ] {
            assert!(vars.contains(&v), "{v} not in {vars:?}");
        }
        assert!(err.to_string().contains(r#""nope" is not one"#), "{err}");
    }

    #[test]
    fn a_bad_database_url_is_named_without_its_password() {
        let err =
            config(&[("DATABASE_URL", "postgres://app:hunter2@db:notaport/app")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(
            text.contains("postgres://REDACTED@db:notaport/app"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let ok = config(&[
            ("DATABASE_URL", "postgres://app:hunter2@db/app"),
            ("REDIS_URL", "redis://:pw@cache:6379"),
        ])
        .unwrap();
        let names: Vec<&str> = ok.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["database", "redis"]);
    }

    #[test]
    fn inherited_sockets_follow_the_systemd_protocol() {
        let ours = std::process::id().to_string();
        let c = config(&[("LISTEN_FDS", "2"), ("LISTEN_PID", &ours)]).unwrap();
        assert_eq!(c.inherited_fds, [3, 4]);
        let c = config(&[("LISTEN_FDS", "1")]).unwrap();
        assert_eq!(c.inherited_fds, [3], "systemfd --no-pid");
        let c = config(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]).unwrap();
        assert!(c.inherited_fds.is_empty(), "meant for pid 1, not us");
        assert!(config(&[("LISTEN_FDS", "many")]).is_err());
    }

    #[test]
    fn a_unix_socket_alone_means_no_tcp() {
        let c = config(&[("UNIX_SOCKET", "/tmp/pb.sock")]).unwrap();
        assert!(!c.serve_tcp());
        assert_eq!(c.unix_socket_mode, 0o660);
        let c = config(&[
            ("UNIX_SOCKET", "/tmp/pb.sock"),
            ("PORT", "8080"),
            ("UNIX_SOCKET_MODE", "600"),
        ])
        .unwrap();
        assert!(c.serve_tcp());
        assert_eq!(c.unix_socket_mode, 0o600);
        assert!(config(&[("UNIX_SOCKET_MODE", "999")]).is_err());
    }

    #[test]
    fn empty_values_mean_unset() {
        let c = config(&[("PORT", ""), ("WEB_CONCURRENCY", " ")]).unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
    }

    #[test]
    fn dotenv_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("portbound-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, "# comment\nPORT=6000\nHOST=127.0.0.1\n").unwrap();
        let mut env = Env::from_pairs([("PORT", "7000")]);
        let mut from_file = Env::default();
        from_file.merge_dotenv(&path).unwrap();
        // what Env::load does: the file first, the process environment on top
        for (k, v) in env.vars.clone() {
            from_file.vars.insert(k, v);
        }
        env = from_file;
        let c = Config::from_vars(&env).unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));

        std::fs::write(&path, "PORT=6000\nthis is not a variable\n").unwrap();
        let err = Env::default().merge_dotenv(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(".env=\"line 2: this is not a variable\""),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
