//! The OpenAPI document (`ApiDoc`) and the Swagger UI that renders it. The UI
//! is compiled in (utoipa-swagger-ui's `vendored` feature), so neither the
//! build nor the browser fetches anything from the internet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config as SwaggerConfig;

use crate::error::{ApiError, FieldError, ProblemDetails};
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
    cfg.route(
        SPEC_PATH,
        web::get().to(|| async {
            static SPEC: OnceLock<String> = OnceLock::new();
            HttpResponse::Ok().content_type("application/json").body(
                SPEC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
                    .clone(),
            )
        }),
    );
    cfg.route("/docs/{file:.*}", web::get().to(docs_asset));
}

/// Swagger UI's configuration: this service's spec, no calls elsewhere.
fn swagger_config() -> Arc<SwaggerConfig<'static>> {
    Arc::new(
        SwaggerConfig::new([SPEC_PATH])
            // The validator badge would call validator.swagger.io.
            .validator_url("none")
            .display_request_duration(true)
            .try_it_out_enabled(false)
            .filter(true),
    )
}

/// One Swagger UI file, ready to send: as is, gzipped, and its validator.
struct Asset {
    content_type: String,
    plain: Vec<u8>,
    gzip: Vec<u8>,
    /// A strong validator of the plain bytes; the gzipped ones are `…-gz`.
    etag: String,
}

/// How long browsers keep the assets before asking again (with the ETag,
/// which costs a 304). A day: the files change only with a new release.
const ASSET_CACHE: &str = "public, max-age=86400";

fn asset(file: &str) -> Option<Arc<Asset>> {
    static ASSETS: OnceLock<Mutex<HashMap<String, Option<Arc<Asset>>>>> = OnceLock::new();
    let assets = ASSETS.get_or_init(Default::default);
    if let Some(found) = assets.lock().ok()?.get(file) {
        return found.clone();
    }
    // Built outside the lock: gzipping the bundle takes tens of ms, once.
    let built = utoipa_swagger_ui::serve(file, swagger_config())
        .ok()
        .flatten()
        .map(|f| {
            let plain = f.bytes.into_owned();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let gzip = std::io::Write::write_all(&mut gz, &plain)
                .and_then(|()| gz.finish())
                .unwrap_or_default();
            let hash = plain.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            Arc::new(Asset {
                content_type: f.content_type,
                etag: format!("\"{hash:016x}\""),
                plain,
                gzip,
            })
        });
    // Only files Swagger UI ships are kept, so no client can grow the map.
    if built.is_some() {
        assets.lock().ok()?.insert(file.to_owned(), built.clone());
    }
    built
}

/// True when an `If-None-Match` list holds one of `tags` (weak comparison,
/// RFC 9110 §13.1.2).
fn none_match(header: &str, tags: [&str; 2]) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*" || {
            let t = t.strip_prefix("W/").unwrap_or(t);
            tags.contains(&t)
        }
    })
}

/// A Swagger UI file: gzipped when the client accepts gzip, with an ETag, a
/// day's cache lifetime, and 304 for a validator that still matches.
async fn docs_asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    let file = file.into_inner();
    let Some(asset) = asset(&file) else {
        return ApiError::not_found().to_response(None);
    };
    let gzip_etag = format!("{}-gz\"", asset.etag.trim_end_matches('"'));
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip)
        && !asset.gzip.is_empty();
    let etag = if gzip { &gzip_etag } else { &asset.etag };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| none_match(h, [&asset.etag, &gzip_etag]));
    let mut res = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, ASSET_CACHE))
        .insert_header((header::VARY, "Accept-Encoding"));
    if unchanged {
        return res.finish();
    }
    res.content_type(asset.content_type.as_str());
    if gzip {
        res.insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzip.clone())
    } else {
        res.body(asset.plain.clone())
    }
}

/// Whether an `Accept-Encoding` value admits gzip (not with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_and_if_none_match_are_read_as_the_rfcs_say() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(none_match("\"a\", W/\"b\"", ["\"b\"", "\"c\""]));
        assert!(none_match("*", ["\"x\"", "\"y\""]));
        assert!(!none_match("\"a\"", ["\"b\"", "\"c\""]));
    }
}
