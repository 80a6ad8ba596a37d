//! Routes that exist only for the test suite, mounted only when
//! `PORTBOUND_TEST_ROUTES=true`: a slow endpoint that lets the drain tests
//! hold a request in flight across a stop signal, a panicking one, and one
//! that logs. Never enable them in production.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;

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
}
