//! actix-idiomatic: what a user would write *instead of* portbound with the
//! same features, on actix-web 4 and its usual companions. One of the peers
//! `bench/run` measures portbound against (bench/peers/README.md).
//!
//! Crates, and what each brings:
//! - `actix-web` 4: the server, `middleware::Logger` (one access-log line per
//!   request, with the request id) and `middleware::DefaultHeaders` (the
//!   security headers);
//! - `env_logger`: the `log` backend, writing to stdout, `RUST_LOG` (default
//!   `info`);
//! - `actix-web-prom`: Prometheus metrics (`PrometheusMetricsBuilder`), served
//!   on `GET /metrics` by the same app;
//! - `uuid`: the request id. No request-id crate for actix-web is widely used
//!   (actix-request-identifier and actix-web-requestid each see a few hundred
//!   downloads a month), so this is the `middleware::from_fn` pattern from
//!   actix-web's own docs: honour an incoming `x-request-id`, else a UUID v4,
//!   kept in the request's extensions and set on the response;
//! - `serde` / `serde_json`: the JSON bodies;
//! - `sqlx` (PostgreSQL, tokio) and `log`: with `DATABASE_URL` set, one
//!   `PgPool` built in `main` and shared by every worker as `web::Data`, the
//!   way Zero2Prod builds it (`PgPoolOptions`, `connect_lazy`), with
//!   portbound's acquire timeout (2 s), for `GET /api/v1/notes/{id}`;
//! - `tokio` (already under actix-rt): with `PEER_TEST_ROUTES=1`, the
//!   `Semaphore` of `GET /__test/busy`, shared by every worker as
//!   `web::Data` like the pool.
//!
//! `GET /` and `POST /api/v1/echo` answer as portbound's and
//! examples/bare.rs's do, the echo's `request_id` being the request's id.
//! `GET /api/v1/notes/{id}` answers as examples/notes.rs does (for
//! bench/single-query): the note as JSON with `ETag: "<version>"`, or a 404
//! problem document. `GET /__test/busy?ms=N` (for bench/overload, only with
//! `PEER_TEST_ROUTES=1`) answers as portbound's test route does: one of 4
//! slots held for N ms (at most 60 s), then `{"worked_ms":N}`.
//!
//! ```sh
//! cargo build --release --manifest-path bench/peers/Cargo.toml
//! PORT=5001 WEB_CONCURRENCY=2 bench/peers/target/release/actix-idiomatic
//! ```
//!
//! `PORT` (default 5000), `HOST` (default 127.0.0.1), `WEB_CONCURRENCY`
//! (workers; default: the CPUs available), `DATABASE_URL` (unset: no notes
//! route), `DATABASE_POOL_SIZE` (default 5, portbound's), `PEER_TEST_ROUTES`
//! (`1`: the busy route). actix's own signal
//! handling stops it (SIGTERM graceful, SIGINT at once).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Logger, Next, from_fn};
use actix_web::{App, Error, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use actix_web_prom::PrometheusMetricsBuilder;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;

// ---------------------------------------------------------------- request id

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in its extensions for handlers.
#[derive(Clone)]
struct RequestId(String);

async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let incoming = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let id = match incoming {
        Some(v) => v.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let value = HeaderValue::from_str(&id).expect("a valid header value");
    req.extensions_mut().insert(RequestId(id));
    let mut res = next.call(req).await?;
    res.headers_mut().insert(X_REQUEST_ID, value);
    Ok(res)
}

// ---------------------------------------------------------------- handlers

#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

async fn root() -> HttpResponse {
    HttpResponse::Ok().json(Health {
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
    client: Option<IpAddr>,
    scheme: &'static str,
}

async fn echo(req: HttpRequest, body: web::Json<EchoRequest>) -> HttpResponse {
    let message = body.into_inner().message;
    let length = message.chars().count();
    let valid = (1..=1000).contains(&length)
        && !message
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if !valid {
        return HttpResponse::UnprocessableEntity().finish();
    }
    let id = req.extensions().get::<RequestId>().cloned();
    HttpResponse::Ok().json(EchoResponse {
        message,
        length,
        request: RequestMeta {
            method: req.method().as_str(),
            path: req.path(),
            request_id: id.as_ref().map(|id| id.0.as_str()),
            client: req.peer_addr().map(|a| a.ip()),
            scheme: "http",
        },
    })
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

fn problem(req: &HttpRequest, status: StatusCode, detail: &'static str) -> HttpResponse {
    let id = req.extensions().get::<RequestId>().cloned();
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        request_id: id.as_ref().map(|id| id.0.as_str()),
    };
    let mut res = HttpResponse::build(status);
    res.content_type("application/problem+json");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.insert_header((header::RETRY_AFTER, 1));
    }
    res.body(serde_json::to_vec(&body).unwrap_or_default())
}

async fn get_note(req: HttpRequest, pool: web::Data<PgPool>, id: web::Path<i64>) -> HttpResponse {
    let note = sqlx::query_as::<_, Note>(ONE)
        .bind(id.into_inner())
        .fetch_optional(pool.get_ref())
        .await;
    match note {
        Ok(Some(note)) => HttpResponse::Ok()
            .insert_header((header::ETAG, format!("\"{}\"", note.version)))
            .json(note),
        Ok(None) => problem(&req, StatusCode::NOT_FOUND, "no such note"),
        Err(e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))) => {
            log::debug!("database unavailable: {e}");
            problem(
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; retry shortly",
            )
        }
        Err(e) => {
            log::error!("notes: {e}");
            problem(
                &req,
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

async fn busy(slots: web::Data<Semaphore>, query: web::Query<BusyQuery>) -> HttpResponse {
    let ms = query.ms.min(MAX_BUSY_MS);
    let Ok(_slot) = slots.acquire().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().json(Worked { worked_ms: ms })
}

fn test_routes() -> bool {
    matches!(
        std::env::var("PEER_TEST_ROUTES").as_deref().map(str::trim),
        Ok("1" | "true")
    )
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

#[actix_web::main]
async fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stdout)
        .init();

    let port: u16 = env_or("PORT", || 5000)?;
    let host: IpAddr = env_or("HOST", || IpAddr::from([127, 0, 0, 1]))?;
    let workers: usize = env_or("WEB_CONCURRENCY", || {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    })?;

    // The Zero2Prod way: one pool, built here, shared by every worker. Lazy:
    // the first query opens the first connection.
    let pool = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(web::Data::new(
            PgPoolOptions::new()
                .max_connections(env_or("DATABASE_POOL_SIZE", || 5)?)
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy(url.trim())
                .map_err(|e| io::Error::other(format!("DATABASE_URL: {e}")))?,
        )),
        _ => None,
    };

    // The busy route's slots, one set for every worker (bench/overload).
    let slots = test_routes().then(|| web::Data::new(Semaphore::new(BUSY_SLOTS)));

    // One registry for every worker: the middleware is cloned into each.
    let prometheus = PrometheusMetricsBuilder::new("api")
        .endpoint("/metrics")
        .build()
        .map_err(|e| io::Error::other(e.to_string()))?;

    let server = HttpServer::new(move || {
        // The last `wrap` is the outermost: Logger sees the response with
        // its x-request-id header; /metrics gets the headers and the id too.
        let app = App::new()
            .app_data(web::JsonConfig::default().limit(65536))
            .wrap(prometheus.clone())
            .wrap(from_fn(request_id))
            .wrap(
                DefaultHeaders::new()
                    .add((
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; frame-ancestors 'none'",
                    ))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::REFERRER_POLICY, "no-referrer"))
                    .add((header::CACHE_CONTROL, "no-store")),
            )
            // actix's default format, with the request id before the time taken.
            .wrap(Logger::new(
                r#"%a "%r" %s %b "%{Referer}i" "%{User-Agent}i" %{x-request-id}o %T"#,
            ))
            .route("/", web::get().to(root))
            .route("/api/v1/echo", web::post().to(echo));
        let app = match &slots {
            Some(slots) => app
                .app_data(slots.clone())
                .route("/__test/busy", web::get().to(busy)),
            None => app,
        };
        match &pool {
            Some(pool) => app
                .app_data(pool.clone())
                .route("/api/v1/notes/{id}", web::get().to(get_note)),
            None => app,
        }
    })
    .workers(workers)
    .bind((host, port))?;

    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    server.run().await
}
