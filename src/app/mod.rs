//! The service's own half: its routes and its OpenAPI paths, on the
//! [`portbound`] runtime, which never names them.
//!
//! The reference service's own routes:
//! - `POST /api/v1/echo`, a JSON endpoint with a validated body;
//! - `GET /ws/echo`, a WebSocket echo that closes cleanly when the drain begins.

pub mod echo;
pub mod ws;

use actix_web::web;
use utoipa::OpenApi;

use portbound::Service;
use portbound::routes::Route;

/// The service's OpenAPI document: its `info` and its own paths. The
/// runtime adds the probes, `/api/v1/info` and the shared error responses.
#[derive(OpenApi)]
#[openapi(
    info(
        contact(name = "portbound", url = "https://github.com/portbound/portbound"),
        description = "A port-bound web service: it is its own HTTP server, takes its port \
                       from `PORT`, and starts unchanged on Heroku, Fly.io, Cloud Run, Railway \
                       and Render. Every error is `application/problem+json` (RFC 9457) and \
                       every response carries `X-Request-ID`."
    ),
    paths(
        echo::echo,
    ),
    tags((name = "api", description = "The service's API"))
)]
pub struct ApiDoc;

/// The service's routes that its OpenAPI document lists (a WebSocket is not
/// one: OpenAPI cannot describe it).
pub fn routes() -> Vec<Route> {
    vec![
        // One line a route (`cargo generate` drops the example's by its line).
        echo::ROUTE,
    ]
}

/// Mounts the service's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in routes() {
        route.register(cfg);
    }
    ws::configure(cfg);
}

/// The service's name: its binary's, which every manifest runs, and what
/// `/`, the log and the metrics show.
pub const NAME: &str = "portbound";

/// The service: the runtime with this module's routes and document.
/// `src/main.rs` runs it; the tests start it the same way.
pub fn service() -> Service {
    Service::new(NAME, env!("CARGO_PKG_VERSION"))
        .openapi(ApiDoc::openapi())
        .configure(configure)
}
