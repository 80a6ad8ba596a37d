//! The OpenAPI document (`ApiDoc`) and the Swagger UI that renders it. The UI
//! is compiled in (utoipa-swagger-ui's `vendored` feature), so neither the
//! build nor the browser fetches anything from the internet.

use actix_web::{HttpResponse, http::header, web};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
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
        contact(name = "portbound", url = "https://github.com/portbound/portbound"),
        description = "A port-bound web service: it is its own HTTP server, takes its port \
                       from `PORT`, and starts unchanged on Heroku, Fly.io, Cloud Run, Railway \
                       and Render. Every error is `application/problem+json` (RFC 9457) and \
                       every response carries `X-Request-ID`. `GET /ws/echo` is a WebSocket \
                       echo (not listed below, as OpenAPI cannot describe WebSockets) that \
                       closes with code 1001 when the server drains."
    ),
    // Relative: the instance that serves this document serves the API, on
    // whatever PORT and behind whatever router it runs.
    servers((url = "/", description = "This instance")),
    paths(health::root, health::healthz, health::readyz, info::info, echo::echo),
    components(schemas(ProblemDetails, FieldError)),
    modifiers(&SharedErrors),
    tags(
        (name = "health", description = "Probes for platforms and load balancers"),
        (name = "api", description = "The service's API")
    )
)]
pub struct ApiDoc;

/// Errors any operation can answer, whatever its own responses say: the
/// request middleware and actix's extractors produce them before or around
/// the handler. Declared once under `components.responses` and referenced
/// from every operation, so that generated clients know them.
pub struct SharedErrors;

/// (status, component name, description, applies only to operations with a
/// request body).
const SHARED_ERRORS: [(&str, &str, &str, bool); 5] = [
    (
        "405",
        "MethodNotAllowed",
        "The resource does not take this method; `Allow` lists the ones it does",
        false,
    ),
    (
        "408",
        "RequestTimeout",
        "The request, body included, took longer than `REQUEST_TIMEOUT`",
        true,
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body is larger than `MAX_BODY_BYTES`",
        true,
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body is not sent as `application/json`",
        true,
    ),
    (
        "500",
        "InternalServerError",
        "The service failed; the problem's `request_id` finds it in the log",
        false,
    ),
];

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (_, name, description, _) in SHARED_ERRORS {
            let problem = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ProblemDetails")))
                .build();
            components.responses.insert(
                name.to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(crate::error::PROBLEM_JSON, problem)
                        .build(),
                ),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let has_body = op.request_body.is_some();
                for (status, name, _, body_only) in SHARED_ERRORS {
                    if body_only && !has_body {
                        continue;
                    }
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

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
