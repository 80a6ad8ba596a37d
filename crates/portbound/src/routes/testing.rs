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

/// Mounts the test routes (and warns, once, that they are on).
pub fn configure(cfg: &mut web::ServiceConfig) {
    log::warn!("test routes are enabled (PORTBOUND_TEST_ROUTES); never do this in production");
    cfg.route("/__test/slow", web::get().to(slow))
        .route("/__test/panic", web::get().to(panic))
        .route("/__test/log", web::get().to(log_line));
    // A resource of its own, with a 405 and `Allow` for other methods, like
    // the app's routes.
    super::Route {
        path: ECHO,
        allow: "POST",
        mount: |r| r.post(echo),
    }
    .register(cfg);
}
