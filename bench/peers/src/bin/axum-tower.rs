//! axum-tower: what a user would write *instead of* portbound with the same
//! features, on axum and tower-http. One of the peers `bench/run` measures
//! portbound against (bench/peers/README.md).
//!
//! Crates, and what each brings:
//! - `axum` 0.8 on a `tokio` multi-thread runtime: the server, `Json`,
//!   `DefaultBodyLimit`, graceful shutdown;
//! - `tower-http`: `TraceLayer` (one INFO line per request: method, uri,
//!   request id, status, latency), `SetRequestIdLayer` /
//!   `PropagateRequestIdLayer` (`x-request-id`, UUID v4 unless the request
//!   has one) and `SetResponseHeaderLayer` (the security headers);
//! - `tracing` / `tracing-subscriber`: the fmt subscriber, writing to stdout,
//!   `RUST_LOG` (default `info`);
//! - `axum-prometheus`: Prometheus metrics (a tower layer on
//!   `metrics-exporter-prometheus`), served on `GET /metrics`;
//! - `serde` / `serde_json`: the JSON bodies;
//! - `sqlx` (PostgreSQL, tokio): with `DATABASE_URL` set, one `PgPool` in
//!   the router's `State`, as axum's sqlx-postgres example builds it
//!   (`PgPoolOptions`, `connect`), with portbound's acquire timeout (2 s),
//!   for `GET /api/v1/notes/{id}`;
//! - `tokio`'s `Semaphore` (in the router's `State`) for `GET /__test/busy`
//!   with `PEER_TEST_ROUTES=1`, and `tower`'s `load_shed` and
//!   `concurrency_limit` with axum's `HandleErrorLayer` in front of that
//!   route with `PEER_LOAD_SHED=N` (bench/overload's `axum-tower-shed`).
//!
//! `GET /` and `POST /api/v1/echo` answer as portbound's and
//! examples/bare.rs's do, the echo's `request_id` being the request's id.
//! `GET /api/v1/notes/{id}` answers as examples/notes.rs does (for
//! bench/single-query): the note as JSON with `ETag: "<version>"`, or a 404
//! problem document. `GET /__test/busy?ms=N` (for bench/overload, only with
//! `PEER_TEST_ROUTES=1`) answers as portbound's test route does: one of 4
//! slots held for N ms (at most 60 s), then `{"worked_ms":N}`. With
//! `PEER_LOAD_SHED=N` as well, that route (and only it) is wrapped in
//! `ServiceBuilder::new().layer(HandleErrorLayer).load_shed()
//! .concurrency_limit(N)`: past N at once, a request is answered 503 at once.
//! Framework defaults stand for bad bodies: malformed JSON is a 400, a
//! well-formed body of the wrong shape a 422, a missing content-type a 415.
//!
//! ```sh
//! cargo build --release --manifest-path bench/peers/Cargo.toml
//! PORT=5001 WEB_CONCURRENCY=2 bench/peers/target/release/axum-tower
//! ```
//!
//! `PORT` (default 5000), `HOST` (default 127.0.0.1), `WEB_CONCURRENCY`
//! (tokio worker threads; default: the CPUs available), `DATABASE_URL`
//! (unset: no notes route), `DATABASE_POOL_SIZE` (default 5, portbound's),
//! `PEER_TEST_ROUTES` (`1`: the busy route), `PEER_LOAD_SHED` (unset: none).
//! SIGTERM and SIGINT stop it gracefully (in-flight requests finish).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::BoxError;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_prometheus::PrometheusMetricLayer;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::load_shed::error::Overloaded;
use tower_http::LatencyUnit;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

// ---------------------------------------------------------------- handlers

#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

async fn root() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "portbound",
        version: "0.1.0",
    })
}

// The echo as examples/bare.rs writes it: a JSON object with one known field,
// 1 to 1000 characters without control characters (but \t \n \r).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoFields {
    message: String,
}

struct EchoRequest {
    message: String,
}

impl<'de> Deserialize<'de> for EchoRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = EchoFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EchoFields, A::Error> {
                EchoFields::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly)
            .map(|f| EchoRequest { message: f.message })
    }
}

#[derive(Serialize)]
struct EchoResponse<'a> {
    message: String,
    length: usize,
    request: RequestMeta<'a>,
}

#[derive(Serialize)]
struct RequestMeta<'a> {
    method: &'a str,
    path: &'a str,
    request_id: Option<&'a str>,
    client: IpAddr,
    scheme: &'static str,
}

async fn echo(
    method: Method,
    uri: Uri,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    Json(body): Json<EchoRequest>,
) -> Response {
    let message = body.message;
    let length = message.chars().count();
    let valid = (1..=1000).contains(&length)
        && !message
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if !valid {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    Json(EchoResponse {
        message,
        length,
        request: RequestMeta {
            method: method.as_str(),
            path: uri.path(),
            request_id: id.header_value().to_str().ok(),
            client: peer.ip(),
            scheme: "http",
        },
    })
    .into_response()
}

// The note as examples/notes.rs answers it: the row as JSON, its version
// as the ETag; a problem document (RFC 9457) for a missing one.

#[derive(Serialize, sqlx::FromRow)]
struct Note {
    id: i64,
    title: String,
    body: String,
    version: i64,
}

const ONE: &str = "SELECT id, title, body, version FROM notes WHERE id = $1";

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'static str,
    request_id: Option<&'a str>,
}

fn problem(id: &RequestId, status: StatusCode, detail: &'static str) -> Response {
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        request_id: id.header_value().to_str().ok(),
    };
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    res
}

async fn get_note(
    State(pool): State<PgPool>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<i64>,
) -> Response {
    let note = sqlx::query_as::<_, Note>(ONE)
        .bind(id)
        .fetch_optional(&pool)
        .await;
    match note {
        Ok(Some(note)) => {
            let etag = HeaderValue::try_from(format!("\"{}\"", note.version))
                .expect("a valid header value");
            ([(header::ETAG, etag)], Json(note)).into_response()
        }
        Ok(None) => problem(&request_id, StatusCode::NOT_FOUND, "no such note"),
        Err(e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))) => {
            tracing::debug!("database unavailable: {e}");
            problem(
                &request_id,
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; retry shortly",
            )
        }
        Err(e) => {
            tracing::error!("notes: {e}");
            problem(
                &request_id,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not complete the request",
            )
        }
    }
}

// The busy route of bench/overload, as portbound's /__test/busy
// (crates/portbound/src/routes/testing.rs): a handler bound by a resource of
// 4 slots, like a pool of 4 connections, each held for `ms` milliseconds.

/// How many busy requests work at once.
const BUSY_SLOTS: usize = 4;
/// The longest a busy request may hold a slot.
const MAX_BUSY_MS: u64 = 60_000;

#[derive(Deserialize)]
struct BusyQuery {
    ms: u64,
}

#[derive(Serialize)]
struct Worked {
    worked_ms: u64,
}

async fn busy(State(slots): State<Arc<Semaphore>>, Query(query): Query<BusyQuery>) -> Response {
    let ms = query.ms.min(MAX_BUSY_MS);
    let Ok(_slot) = slots.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(Worked { worked_ms: ms }).into_response()
}

/// `load_shed`'s refusal as a response (axum's error-handling guide).
async fn shed_error(err: BoxError) -> (StatusCode, &'static str) {
    if err.is::<Overloaded>() {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded; retry shortly")
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unhandled internal error",
        )
    }
}

/// `GET /__test/busy` with `PEER_TEST_ROUTES=1`, behind `load_shed` +
/// `concurrency_limit(N)` with `PEER_LOAD_SHED=N`; otherwise no route.
fn busy_routes() -> io::Result<Router> {
    let on = matches!(
        std::env::var("PEER_TEST_ROUTES").as_deref().map(str::trim),
        Ok("1" | "true")
    );
    if !on {
        return Ok(Router::new());
    }
    let route = match env_or::<usize>("PEER_LOAD_SHED", || 0)? {
        0 => get(busy),
        limit => get(busy).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed_error))
                .load_shed()
                .concurrency_limit(limit),
        ),
    };
    Ok(Router::new()
        .route("/__test/busy", route)
        .with_state(Arc::new(Semaphore::new(BUSY_SLOTS))))
}

// ---------------------------------------------------------------- main

fn env_or<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> io::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{name}={v:?} is not valid"))),
        _ => Ok(default()),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(io::stdout)
        // No colour codes when stdout is a file or a pipe.
        .with_ansi(io::IsTerminal::is_terminal(&io::stdout()))
        .init();

    let port: u16 = env_or("PORT", || 5000)?;
    let host: IpAddr = env_or("HOST", || IpAddr::from([127, 0, 0, 1]))?;
    let workers: usize = env_or("WEB_CONCURRENCY", || {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    })?;

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(SocketAddr::new(host, port)))
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let (prometheus_layer, metric_handle) = PrometheusMetricLayer::pair();

    // ServiceBuilder runs top to bottom: the id is set before TraceLayer's
    // span is made, and copied to the response before TraceLayer logs it.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        uri = %req.uri(),
                        request_id = %id,
                    )
                })
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(prometheus_layer);

    // As axum's sqlx-postgres example: one pool, in the router's State.
    let notes = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let pool = PgPoolOptions::new()
                .max_connections(env_or("DATABASE_POOL_SIZE", || 5)?)
                .acquire_timeout(Duration::from_secs(2))
                .connect(url.trim())
                .await
                .map_err(|e| io::Error::other(format!("DATABASE_URL: {e}")))?;
            Router::new()
                .route("/api/v1/notes/{id}", get(get_note))
                .with_state(pool)
        }
        _ => Router::new(),
    };

    let app = Router::new()
        .merge(notes)
        .merge(busy_routes()?)
        .route("/", get(root))
        .route("/api/v1/echo", post(echo))
        .route(
            "/metrics",
            get(move || async move { metric_handle.render() }),
        )
        .layer(DefaultBodyLimit::max(65536))
        .layer(middleware);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
}
