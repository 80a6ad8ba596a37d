//! The runtime's half of the OpenAPI document (the probes and
//! `/api/v1/info`, the problem schemas, the errors every operation can
//! return), merged with the service's own, and the Swagger UI that renders
//! it. The UI is compiled in (utoipa-swagger-ui's `vendored` feature), so
//! neither the build nor the browser fetches anything from the internet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config as SwaggerConfig;

use crate::error::{ApiError, FieldError, ProblemDetails};
use crate::routes::{health, info};
use crate::state::AppState;

/// Where the spec is served.
pub const SPEC_PATH: &str = "/api-docs/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs/";

/// The runtime's paths, which every service serves.
#[derive(OpenApi)]
#[openapi(
    // Relative: the instance that serves this document serves the API, on
    // whatever PORT and behind whatever router it runs.
    servers((url = "/", description = "This instance")),
    paths(health::root, health::healthz, health::readyz, info::info),
    components(schemas(ProblemDetails, FieldError)),
    tags(
        (name = "health", description = "Probes for platforms and load balancers"),
        (name = "instance", description = "What this instance is and where it runs")
    )
)]
pub struct RuntimeDoc;

/// The service's document (its `info` and paths; a bare one named `name`
/// when it has none) merged with the runtime's, and the shared error
/// responses added to every operation.
pub fn document(
    name: &str,
    version: &str,
    service: Option<utoipa::openapi::OpenApi>,
) -> utoipa::openapi::OpenApi {
    let mut doc = service.unwrap_or_else(|| {
        utoipa::openapi::OpenApiBuilder::new()
            .info(utoipa::openapi::Info::new(name, version))
            .build()
    });
    // The service's name and version, whatever its derive defaulted to (the
    // package's name, which need not be the binary's).
    doc.info.title = name.to_owned();
    doc.info.version = version.to_owned();
    // utoipa's derive fills the license from the package's `license`; a
    // package without one would show a license with no name.
    if doc.info.license.as_ref().is_some_and(|l| l.name.is_empty()) {
        doc.info.license = None;
    }
    doc.merge(RuntimeDoc::openapi());
    SharedErrors.modify(&mut doc);
    doc
}

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

/// Mounts Swagger UI at `/docs/` (with `/docs` redirecting there) and the
/// spec at `/api-docs/openapi.json`.
pub fn configure_docs(cfg: &mut web::ServiceConfig, state: &AppState) {
    let to_docs = || async {
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, DOCS_PATH))
            .finish()
    };
    // Each resource is named by its pattern: the name is its metrics label.
    cfg.service(
        web::resource("/docs")
            .name("/docs")
            .route(web::get().to(to_docs))
            .route(web::head().to(to_docs)),
    );
    // Serialized once per worker, when the app is built.
    let body: web::Bytes = state.app.openapi.to_json().unwrap_or_default().into();
    let spec = move || {
        let body = body.clone();
        async move {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(body)
        }
    };
    // HEAD wherever GET: actix answers a HEAD routed to a GET handler
    // without the body.
    cfg.service(
        web::resource(SPEC_PATH)
            .name(SPEC_PATH)
            .route(web::get().to(spec.clone()))
            .route(web::head().to(spec)),
    );
    cfg.service(
        web::resource("/docs/{file:.*}")
            .name("/docs/{file}")
            .route(web::get().to(docs_asset))
            .route(web::head().to(docs_asset)),
    );
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
    plain: web::Bytes,
    gzip: web::Bytes,
    /// A strong validator of the plain bytes; the gzipped ones are `…-gz`.
    etag: String,
}

/// How long browsers keep the assets before asking again (with the ETag,
/// which costs a 304). A day: the files change only with a new release.
const ASSET_CACHE: &str = "public, max-age=86400";

/// The file, built on first request and kept.
async fn asset(file: String) -> Option<Arc<Asset>> {
    static ASSETS: OnceLock<Mutex<HashMap<String, Arc<Asset>>>> = OnceLock::new();
    let assets = ASSETS.get_or_init(Default::default);
    if let Some(found) = assets.lock().unwrap_or_else(|e| e.into_inner()).get(&file) {
        return Some(found.clone());
    }
    // Gzipping the bundle takes tens of milliseconds: on actix's blocking
    // pool, not on the worker that serves other connections. Two first
    // requests at once may both build it; the second insert is the same.
    let key = file.clone();
    let built = web::block(move || build_asset(&file))
        .await
        .ok()
        .flatten()?;
    // Only files Swagger UI ships are kept, so no client can grow the map.
    assets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, built.clone());
    Some(built)
}

fn build_asset(file: &str) -> Option<Arc<Asset>> {
    let f = utoipa_swagger_ui::serve(file, swagger_config())
        .ok()
        .flatten()?;
    let plain = f.bytes.into_owned();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzip = std::io::Write::write_all(&mut gz, &plain)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let hash = plain.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    Some(Arc::new(Asset {
        content_type: f.content_type,
        etag: format!("\"{hash:016x}\""),
        plain: plain.into(),
        gzip: gzip.into(),
    }))
}

/// True when an `If-None-Match` list holds `tag` or `*` (weak comparison,
/// RFC 9110 §13.1.2).
fn none_match(header: &str, tag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// A Swagger UI file: gzipped when the client accepts gzip, with an ETag, a
/// day's cache lifetime, and 304 for a validator that still matches.
async fn docs_asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // An error, not a rendered body: the request middleware renders it
    // with the request's id, like every other problem.
    let asset = asset(file.into_inner())
        .await
        .ok_or_else(ApiError::not_found)?;
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip)
        && !asset.gzip.is_empty();
    // Each encoding is its own representation with its own validator, and a
    // 304 must name the one this request would get (RFC 9110 §8.8.3).
    let etag = if gzip {
        format!("{}-gz\"", asset.etag.trim_end_matches('"'))
    } else {
        asset.etag.clone()
    };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| none_match(h, &etag));
    let mut res = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, ASSET_CACHE))
        .insert_header((header::VARY, "Accept-Encoding"));
    if unchanged {
        return Ok(res.finish());
    }
    res.content_type(asset.content_type.as_str());
    Ok(if gzip {
        res.insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzip.clone())
    } else {
        res.body(asset.plain.clone())
    })
}

/// Whether an `Accept-Encoding` value admits gzip (RFC 9110 §12.5.3): a
/// `gzip` entry decides by its weight; without one, a `*` entry does.
fn accepts_gzip(value: &str) -> bool {
    let mut named = None;
    let mut any = None;
    for coding in value.split(',') {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q")
                    && v.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
            })
        });
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            named = Some(!refused);
        } else if name == "*" {
            any = Some(!refused);
        }
    }
    named.or(any).unwrap_or(false)
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
        assert!(!accepts_gzip("gzip;Q=0"));
        assert!(
            !accepts_gzip("gzip;q=0, *"),
            "* covers only codings not named"
        );
        assert!(accepts_gzip("br, *;q=0.1"));
        assert!(!accepts_gzip("identity"));
        assert!(none_match("\"a\", W/\"b\"", "\"b\""));
        assert!(none_match("*", "\"x\""));
        assert!(!none_match("\"a\"", "\"b\""));
    }
}
