//! Routes that exist only for the test suite, mounted only when
//! `PORTBOUND_TEST_ROUTES=true`: a slow endpoint that lets the drain tests
//! hold a request in flight across a stop signal, a panicking one, one that
//! logs, and a JSON echo that shows what the middleware saw, so that the
//! runtime's own tests need no route of the app's. Never enable them in
//! production.

use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::telemetry::RequestInfo;

/// Where the test echo is mounted.
pub const ECHO: &str = "/__test/echo";

/// The longest a test request may hold a worker.
const MAX_DELAY_MS: u64 = 60_000;

/// The query of `/__test/slow`: how long to wait, in milliseconds.
#[derive(Debug, Deserialize)]
pub struct SlowQuery {
    ms: u64,
}

/// Answers 200 after `ms` milliseconds.
async fn slow(query: web::Query<SlowQuery>) -> HttpResponse {
    let ms = query.ms.min(MAX_DELAY_MS);
    // The drain tests wait for this line before they send a signal.
    log::info!("test slow request started ({ms} ms)");
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().json(serde_json::json!({ "slept_ms": ms }))
}

/// How many `/__test/busy` requests work at once: a capacity, like a pool
/// of four database connections.
pub const BUSY_CAPACITY: usize = 4;

/// The slots of `/__test/busy`.
static BUSY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BUSY_CAPACITY);

/// Works for `ms` milliseconds in one of [`BUSY_CAPACITY`] slots, waiting
/// for one first: a handler bound by a resource, whose time grows with the
/// load (the overload tests' capacity-bound work).
async fn busy(query: web::Query<SlowQuery>) -> HttpResponse {
    let ms = query.ms.min(MAX_DELAY_MS);
    let Ok(_slot) = BUSY.acquire().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().json(serde_json::json!({ "worked_ms": ms }))
}

/// Panics, as a buggy handler would.
async fn panic() -> HttpResponse {
    panic!("a test handler panicked on purpose");
}

/// Answers any JSON body with `{"body": ..., "request": {...}}`: the body as
/// read, and the method, path, request id, client address and scheme the
/// middleware gave the request. Bodies go through the app's JSON limits
/// (413, 415, 400) like any handler's.
async fn echo(req: HttpRequest, body: web::Json<serde_json::Value>) -> HttpResponse {
    let ext = req.extensions();
    let info = ext.get::<RequestInfo>();
    HttpResponse::Ok().json(serde_json::json!({
        "body": body.into_inner(),
        "request": {
            "method": req.method().as_str(),
            "path": req.path(),
            "request_id": info.map(|i| i.id.as_str()),
            "client": info.and_then(|i| i.client.ip),
            "scheme": info.map_or("http", |i| i.client.scheme().as_str()),
        },
    }))
}

/// Logs a line while serving, to show the request id in application logs.
async fn log_line() -> HttpResponse {
    log::info!("test route writes an application log line");
    HttpResponse::NoContent().finish()
}

/// With the `postgres` feature: a query that holds its connection for `ms`
/// milliseconds (`pg_sleep`), answered with the worker that asked and the
/// database backend that ran it, so the tests can see every worker use the
/// one pool.
#[cfg(feature = "postgres")]
async fn database(
    query: web::Query<SlowQuery>,
    db: web::Data<crate::database::Database>,
) -> Result<HttpResponse, crate::error::ApiError> {
    let seconds = query.ms.min(MAX_DELAY_MS) as f64 / 1000.0;
    let worker = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let sleep = move || {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid() FROM pg_sleep($1)").bind(seconds)
    };
    #[cfg(feature = "bench-layers")]
    if let Some(pool) = db.shared_for_bench() {
        // The common way, for bench/database to compare: on this worker.
        let backend = sleep()
            .fetch_one(pool)
            .await
            .map_err(crate::database::DatabaseError::from)?;
        return Ok(
            HttpResponse::Ok().json(serde_json::json!({ "worker": worker, "backend": backend }))
        );
    }
    let backend = db
        .run(move |mut conn| async move { sleep().fetch_one(&mut *conn).await })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "worker": worker, "backend": backend })))
}

/// The query of `/__test/db/pair`: the pair's id and the pause between its
/// two rows.
#[cfg(feature = "postgres")]
#[derive(Debug, Deserialize)]
pub struct PairQuery {
    id: i64,
    ms: u64,
}

/// With the `postgres` feature: writes two rows of one pair in a
/// transaction, `ms` apart, into the table `pairs (id bigint, half text)`
/// that the test creates. A drain or a cut request must leave both rows or
/// neither.
#[cfg(feature = "postgres")]
async fn database_pair(
    query: web::Query<PairQuery>,
    db: web::Data<crate::database::Database>,
) -> Result<HttpResponse, crate::error::ApiError> {
    let (id, pause) = (query.id, Duration::from_millis(query.ms.min(MAX_DELAY_MS)));
    log::info!("test pair write started ({id})");
    db.run(move |mut conn| async move {
        use sqlx::Connection as _;
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO pairs (id, half) VALUES ($1, 'first')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tokio::time::sleep(pause).await;
        sqlx::query("INSERT INTO pairs (id, half) VALUES ($1, 'second')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /` of the `bench` upstream (`BENCH_SERVICE_URL`) through the
/// runtime's client: propagation, deadline, budget, breaker, metrics (and
/// a client span with `otel`). `bench/tracing` prices it against
/// [`upstream_bare`].
#[cfg(feature = "upstreams")]
async fn upstream_call(req: HttpRequest) -> Result<HttpResponse, crate::error::ApiError> {
    let reply = crate::upstream::Upstreams::for_request(&req)
        .get("bench")?
        .get("/")
        .send()
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": reply.status.as_u16(),
        "bytes": reply.body.len(),
    })))
}

/// The same call with a bare `awc` client (one per worker, as the runtime
/// keeps its own): what a handler would do without the runtime's client.
#[cfg(feature = "upstreams")]
async fn upstream_bare() -> HttpResponse {
    use std::cell::OnceCell;
    thread_local! {
        static BARE: OnceCell<(awc::Client, Option<String>)> = const { OnceCell::new() };
    }
    let (client, url) = BARE.with(|c| {
        c.get_or_init(|| {
            let url = std::env::var("BENCH_SERVICE_URL")
                .ok()
                .map(|u| format!("{}/", u.trim_end_matches('/')));
            (awc::Client::default(), url)
        })
        .clone()
    });
    let Some(url) = url else {
        return HttpResponse::InternalServerError().body("BENCH_SERVICE_URL is not set");
    };
    match client.get(url).send().await {
        Ok(mut res) => match res.body().await {
            Ok(body) => HttpResponse::Ok().json(serde_json::json!({
                "status": res.status().as_u16(),
                "bytes": body.len(),
            })),
            Err(_) => HttpResponse::BadGateway().finish(),
        },
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

/// Mounts the test routes (and warns, once, that they are on).
pub fn configure(cfg: &mut web::ServiceConfig) {
    log::warn!("test routes are enabled (PORTBOUND_TEST_ROUTES); never do this in production");
    cfg.route("/__test/slow", web::get().to(slow))
        .route("/__test/busy", web::get().to(busy))
        .route("/__test/panic", web::get().to(panic))
        .route("/__test/log", web::get().to(log_line));
    #[cfg(feature = "postgres")]
    cfg.route("/__test/db", web::get().to(database))
        .route("/__test/db/pair", web::post().to(database_pair));
    #[cfg(feature = "upstreams")]
    cfg.route("/__test/upstream", web::get().to(upstream_call))
        .route("/__test/upstream/bare", web::get().to(upstream_bare));
    // A resource of its own, with a 405 and `Allow` for other methods, like
    // the app's routes.
    super::Route {
        path: ECHO,
        allow: "POST",
        mount: |r| r.post(echo),
    }
    .register(cfg);
}
