//! PostgreSQL for a service (the `postgres` feature): `DATABASE_URL` becomes
//! one pool of connections that every handler reaches through [`Database`],
//! probed for `/readyz` by a query, closed at the end of the drain.
//!
//! **Where the pool lives.** actix-web runs each worker on its own
//! current-thread tokio runtime, and a tokio socket stays bound to the I/O
//! driver of the runtime that opened it. A pool shared by the workers opens
//! each connection on whichever worker happened to ask, so every other
//! worker's queries on it depend on that worker's runtime: they stall while
//! it is busy and fail with "IO driver has terminated" once it stops at the
//! drain (sqlx #531, #1396, #1639, #2938). One pool per worker would avoid
//! that but multiply the connections by the workers, which the smallest
//! plans cannot afford (Heroku Essential-0: 20 connections for every dyno and
//! the release dyno together). So the pool lives on a runtime of its own,
//! two threads that open every connection and run every query, and outlive
//! the workers: a handler hands it the work ([`Database::run`]) and awaits
//! the answer. `tests/database.rs` drives it from four workers under load and
//! through a drain.
//!
//! Measured by `bench/database` (2 CPUs, WEB_CONCURRENCY=2, a pool of 10,
//! `wrk -c64` on one `SELECT`; bench/results/database.md): this design
//! serves 16,578 req/s at p99 7.0 ms and 59.8 µs of server CPU a request,
//! the pool shared across the workers 12,944 req/s at p99 6.8 ms and
//! 59.9 µs; in a drain where one worker stops while the other still runs
//! long queries, 0 of 12 fail here and 5 of 12 there, with "A Tokio 1.x
//! context was found, but it is being shutdown". One thread instead of two
//! served 13,152 req/s at p99 13.2 ms: the hand-offs queued behind each
//! other.
//!
//! **Failure is fast.** Waiting for a connection is bounded by
//! `DATABASE_ACQUIRE_TIMEOUT` (2 s): a database that is down answers 503
//! with `Retry-After`, not a request held until `REQUEST_TIMEOUT`; the pool
//! reconnects by itself when the database is back.
//!
//! **Nothing secret is logged.** SQL is logged at `debug` only (slow
//! statements too), parameters never (sqlx does not log them), and no error
//! a client or a log line sees carries the URL.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::LevelFilter;
use sqlx::ConnectOptions;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode, Postgres};

use crate::config::DatabaseSettings;
use crate::error::ApiError;
use crate::platform::Platform;

/// A pooled connection, as [`Database::run`] hands it to the work.
pub type Connection = PoolConnection<Postgres>;

/// Seconds a client is told to wait before retrying while the database is
/// unavailable: the pool retries its connection continuously, so a short
/// wait is enough once the database is back.
const RETRY_AFTER_SECS: u32 = 1;

/// The process's database: a pool on a runtime of its own. Clone it freely
/// (an `Arc`); the runtime mounts it in every worker as
/// `web::Data<Database>`.
#[derive(Clone)]
pub struct Database(Arc<Inner>);

struct Inner {
    pool: PgPool,
    /// The runtime the pool's connections belong to. Shut down in the
    /// background on drop: dropping a runtime from inside another one (an
    /// actix worker) would panic.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    acquire_timeout: Duration,
    /// bench/database only: the pool the common way, for comparison.
    #[cfg(feature = "bench-layers")]
    shared: Option<PgPool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field(
                "max_connections",
                &self.0.pool.options().get_max_connections(),
            )
            .field("acquire_timeout", &self.0.acquire_timeout)
            .finish_non_exhaustive()
    }
}

/// The process's one database, for the metrics (the scrape reads the pool's
/// gauges from it).
static CURRENT: OnceLock<Database> = OnceLock::new();

/// What went wrong with a database call. A client sees a problem document
/// without the cause; the log gets the cause without the URL.
#[derive(Debug)]
pub enum DatabaseError {
    /// No connection within `DATABASE_ACQUIRE_TIMEOUT`, or the connection
    /// failed: the database is down, unreachable or full. Answered 503 with
    /// `Retry-After`.
    Unavailable(String),
    /// The database refused the statement (a constraint, a syntax error).
    /// [`DatabaseError::code`] gives its SQLSTATE for the service to map
    /// (for example 23505, a unique violation, to 409).
    Query(sqlx::Error),
    /// The work panicked or the pool's runtime is gone (the process is
    /// stopping).
    Aborted,
}

impl DatabaseError {
    /// The SQLSTATE of a refused statement (`23505` for a unique violation).
    pub fn code(&self) -> Option<String> {
        match self {
            DatabaseError::Query(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// Whether no row matched a query that expected one.
    pub fn is_row_not_found(&self) -> bool {
        matches!(self, DatabaseError::Query(sqlx::Error::RowNotFound))
    }

    fn kind(&self) -> &'static str {
        match self {
            DatabaseError::Unavailable(_) => "unavailable",
            DatabaseError::Query(_) => "query",
            DatabaseError::Aborted => "aborted",
        }
    }
}

impl std::fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseError::Unavailable(why) => write!(f, "the database is unavailable: {why}"),
            // The database's own message can quote the values a client sent
            // ("Key (email)=(...) already exists"): only its code is shown.
            DatabaseError::Query(sqlx::Error::Database(e)) => write!(
                f,
                "the database refused the statement (SQLSTATE {})",
                e.code().as_deref().unwrap_or("unknown")
            ),
            DatabaseError::Query(e) => write!(f, "the query failed: {}", describe(e)),
            DatabaseError::Aborted => f.write_str("the database call was aborted"),
        }
    }
}

impl std::error::Error for DatabaseError {}

impl From<sqlx::Error> for DatabaseError {
    fn from(e: sqlx::Error) -> DatabaseError {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => DatabaseError::Unavailable(describe(&e)),
            other => DatabaseError::Query(other),
        }
    }
}

impl From<DatabaseError> for ApiError {
    /// 503 with `Retry-After` while the database is unavailable; 500
    /// otherwise, its cause logged (a handler maps the errors it expects,
    /// such as a unique violation, before this).
    fn from(e: DatabaseError) -> ApiError {
        match e {
            DatabaseError::Unavailable(why) => {
                // Once per request would flood the log while the database
                // is down; the readiness probe logs the change of state.
                log::debug!("database unavailable: {why}");
                ApiError::unavailable(
                    "the database is unavailable; retry shortly",
                    RETRY_AFTER_SECS,
                )
            }
            other => {
                log::error!("{other}");
                ApiError::from_status(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// An error's text without anything that could hold the URL: sqlx's
/// configuration errors quote it, so they are named, not shown.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the connection settings were refused".to_owned(),
        sqlx::Error::PoolTimedOut => "no connection within DATABASE_ACQUIRE_TIMEOUT".to_owned(),
        other => crate::backing::redact_credentials(&other.to_string()),
    }
}

impl Database {
    /// The pool for `settings` on `platform`, on a runtime of its own. No
    /// connection is opened yet: the first query (or readiness probe) opens
    /// one, so a database that is down does not stop the service from
    /// starting; `/readyz` says so instead. Errs (with a message that names
    /// `DATABASE_URL` but not its credentials) when the URL cannot be used.
    pub fn open(settings: &DatabaseSettings, platform: Platform) -> Result<Database, String> {
        let options = connect_options(settings.url(), platform)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // Two: one serialised the hand-offs (p99 13.2 ms against 7.0 ms
            // in bench/database); more would only compete with the workers.
            .worker_threads(2)
            .thread_name("database")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the database runtime: {e}"))?;
        let pool_options = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout);
        // bench/database compares the design below with the common one: one
        // pool built on the main thread and used from every worker as it is
        // (PORTBOUND_BENCH_DB=shared, with the `bench-layers` feature only).
        #[cfg(feature = "bench-layers")]
        let shared = (std::env::var("PORTBOUND_BENCH_DB").as_deref() == Ok("shared"))
            .then(|| pool_options.clone().connect_lazy_with(options.clone()));
        let pool = {
            // The pool's maintenance tasks start on the runtime it is built in.
            let _in_runtime = runtime.enter();
            pool_options.connect_lazy_with(options)
        };
        let handle = runtime.handle().clone();
        let database = Database(Arc::new(Inner {
            pool,
            runtime: Some(runtime),
            handle,
            acquire_timeout: settings.acquire_timeout,
            #[cfg(feature = "bench-layers")]
            shared,
        }));
        let _ = CURRENT.set(database.clone());
        Ok(database)
    }

    /// Runs `work` with a pooled connection on the database's runtime and
    /// returns its result. Waiting for the connection is bounded by
    /// `DATABASE_ACQUIRE_TIMEOUT`.
    ///
    /// The work runs to its end even if the request that asked for it is
    /// cut (a client gone, `REQUEST_TIMEOUT`, the drain's deadline), so a
    /// transaction in it commits or rolls back whole: no request leaves a
    /// half-written row.
    ///
    /// ```no_run
    /// # async fn handler(db: actix_web::web::Data<portbound::database::Database>)
    /// # -> Result<actix_web::HttpResponse, portbound::error::ApiError> {
    /// let count: i64 = db
    ///     .run(|mut conn| async move {
    ///         sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&mut *conn).await
    ///     })
    ///     .await?;
    /// # Ok(actix_web::HttpResponse::Ok().json(count))
    /// # }
    /// ```
    pub async fn run<F, Fut, T>(&self, work: F) -> Result<T, DatabaseError>
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.0.pool.clone();
        // A span for the work, the child of the request's (the `otel`
        // feature): the system only, never the statement's values.
        #[cfg(feature = "otel")]
        let span = crate::telemetry::otel::current().and_then(|parent| {
            crate::telemetry::otel::client_span(
                &parent,
                "postgresql".to_owned(),
                vec![opentelemetry::KeyValue::new("db.system.name", "postgresql")],
            )
        });
        let task = self.0.handle.spawn(async move {
            let started = Instant::now();
            let conn = pool.acquire().await;
            metrics::histogram!("database_acquire_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            work(conn?).await
        });
        let result = match task.await {
            Ok(result) => result.map_err(DatabaseError::from),
            Err(_) => Err(DatabaseError::Aborted),
        };
        if let Err(e) = &result {
            metrics::counter!("database_errors_total", "kind" => e.kind()).increment(1);
        }
        #[cfg(feature = "otel")]
        if let Some((cx, _)) = &span {
            let error = result.as_ref().err().map(DatabaseError::kind);
            crate::telemetry::otel::end_client_span(cx, None, error);
        }
        result
    }

    /// bench/database only: the pool built the common way (one pool on the
    /// main thread, used from every worker directly), when
    /// `PORTBOUND_BENCH_DB=shared` asked for it.
    #[cfg(feature = "bench-layers")]
    pub fn shared_for_bench(&self) -> Option<&PgPool> {
        self.0.shared.as_ref()
    }

    /// `sql` (`SELECT 1`, or the service's
    /// [`crate::Service::readiness_query`]) through the pool, within
    /// `timeout`: the readiness probe.
    pub fn ping_blocking(&self, timeout: Duration, sql: &'static str) -> Result<Duration, String> {
        let pool = self.0.pool.clone();
        let started = Instant::now();
        self.0.handle.block_on(async move {
            let query = async {
                let mut conn = pool.acquire().await?;
                sqlx::query(sql).execute(&mut *conn).await
            };
            match tokio::time::timeout(timeout, query).await {
                Ok(Ok(_)) => Ok(started.elapsed()),
                Ok(Err(e)) => Err(DatabaseError::from(e).to_string()),
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        })
    }

    /// Closes the pool: waits for the connections in use to come back, then
    /// closes every one. Run at the end of the drain, after the last request.
    pub async fn close(&self) {
        let pool = self.0.pool.clone();
        let _ = self.0.handle.spawn(async move { pool.close().await }).await;
    }
}

/// Sets the pool's gauges (connections open, idle and in use, and the most
/// it may open), for a scrape.
pub fn record_metrics() {
    let Some(db) = CURRENT.get() else {
        return;
    };
    let pool = &db.0.pool;
    let (size, idle) = (pool.size(), pool.num_idle() as u32);
    metrics::gauge!("database_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("database_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("database_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
}

/// Describes the metrics, once, for the exposition's `# HELP` lines.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "database_pool_connections",
        "connections the database pool holds open, idle or in use"
    );
    metrics::describe_gauge!(
        "database_pool_max_connections",
        "the most connections the pool may open (DATABASE_POOL_SIZE)"
    );
    metrics::describe_histogram!(
        "database_acquire_duration_seconds",
        "time spent waiting for a pooled connection"
    );
    metrics::describe_counter!(
        "database_errors_total",
        "database calls that failed, by kind (unavailable, query, aborted)"
    );
}

/// The connection options for `url` on `platform`.
///
/// - An `sslmode` in the URL wins.
/// - Without one, on Heroku, TLS is required: Heroku Postgres refuses
///   connections without it and its certificates cannot be verified
///   ("sslmode=require", <https://devcenter.heroku.com/articles/connecting-heroku-postgres>).
///   Elsewhere sqlx's default applies: `prefer` (TLS when the server offers
///   it).
/// - `sslmode=verify-full&sslrootcert=/path/ca.pem` verifies the server
///   against the CA the user supplies.
/// - The Cloud SQL socket form, `postgres://user:pass@/db?host=/cloudsql/...`,
///   connects to the unix socket.
/// - Statements are logged at `debug` only, slow ones too.
pub fn connect_options(url: &str, platform: Platform) -> Result<PgConnectOptions, String> {
    let mut options = PgConnectOptions::from_str(&crate::backing::with_placeholder_host(url))
        .map_err(|e| {
            format!(
                "DATABASE_URL cannot be used: {}",
                match e {
                    sqlx::Error::Configuration(inner) =>
                        crate::backing::redact_credentials(&inner.to_string()),
                    other => describe(&other),
                }
            )
        })?;
    let has_sslmode = url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
        })
        .unwrap_or(false);
    if !has_sslmode && platform == Platform::Heroku {
        options = options.ssl_mode(PgSslMode::Require);
    }
    Ok(options
        .log_statements(LevelFilter::Debug)
        .log_slow_statements(LevelFilter::Debug, Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl_mode(url: &str, platform: Platform) -> String {
        format!(
            "{:?}",
            connect_options(url, platform).unwrap().get_ssl_mode()
        )
    }

    #[test]
    fn the_url_sslmode_wins_and_heroku_requires_tls_without_one() {
        let plain = "postgres://app:pw@db:5432/app";
        assert_eq!(ssl_mode(plain, Platform::Heroku), "Require");
        assert_eq!(ssl_mode(plain, Platform::Local), "Prefer");
        let disabled = "postgres://app:pw@db:5432/app?sslmode=disable";
        assert_eq!(ssl_mode(disabled, Platform::Heroku), "Disable");
        let full = "postgres://app:pw@db/app?sslmode=verify-full";
        assert_eq!(ssl_mode(full, Platform::Fly), "VerifyFull");
    }

    #[test]
    fn the_cloud_sql_socket_form_is_accepted() {
        let options = connect_options(
            "postgres://app:pw@/app?host=/cloudsql/proj:region:inst",
            Platform::CloudRun,
        )
        .unwrap();
        assert_eq!(
            options
                .get_socket()
                .map(|p| p.display().to_string())
                .as_deref(),
            Some("/cloudsql/proj:region:inst")
        );
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let err = connect_options(
            "postgres://app:hunter2@db:5432/app?sslmode=sometimes",
            Platform::Local,
        )
        .unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn errors_shown_to_clients_carry_no_database_message() {
        let e = DatabaseError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.kind(), "unavailable");
        let api = ApiError::from(e);
        assert_eq!(api.status, 503);
        assert_eq!(api.retry_after, Some(RETRY_AFTER_SECS));
        assert!(
            !api.detail.contains("DATABASE_ACQUIRE_TIMEOUT"),
            "{}",
            api.detail
        );
    }
}
