//! The OpenAPI document (`ApiDoc`) and the Swagger UI that renders it. The UI
//! is compiled in (utoipa-swagger-ui's `vendored` feature), so neither the
//! build nor the browser fetches anything from the internet.

use actix_web::{HttpResponse, http::header, web};
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::error::{FieldError, ProblemDetails};
use crate::routes::{echo, health, info};

/// Where the spec is served.
pub const SPEC_PATH: &str = "/api-docs/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs/";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "portbound",
        description = "A port-bound web service: it is its own HTTP server, takes its port \
                       from `PORT`, and starts unchanged on Heroku, Fly.io, Cloud Run, Railway \
                       and Render. Every error is `application/problem+json` (RFC 9457) and \
                       every response carries `X-Request-ID`. `GET /ws/echo` is a WebSocket \
                       echo (not listed below, as OpenAPI cannot describe WebSockets) that \
                       closes with code 1001 when the server drains."
    ),
    paths(health::root, health::healthz, health::readyz, info::info, echo::echo),
    components(schemas(ProblemDetails, FieldError)),
    tags(
        (name = "health", description = "Probes for platforms and load balancers"),
        (name = "api", description = "The service's API")
    )
)]
pub struct ApiDoc;

/// The spec as pretty JSON, as committed in `openapi.json`.
pub fn spec_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

/// Mounts Swagger UI at `/docs/` (with `/docs` redirecting there) and the
/// spec at `/api-docs/openapi.json`.
pub fn configure_docs(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, DOCS_PATH))
                .finish()
        }),
    );
    cfg.service(
        SwaggerUi::new("/docs/{_:.*}")
            .url(SPEC_PATH, ApiDoc::openapi())
            .config(
                SwaggerConfig::new([SPEC_PATH])
                    // The validator badge would call validator.swagger.io.
                    .validator_url("none")
                    .display_request_duration(true)
                    .try_it_out_enabled(false)
                    .filter(true),
            ),
    );
}
